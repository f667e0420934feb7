//! User and group lookups from the sandbox's own `/etc/passwd` and `/etc/group`.
//!
//! envd is a static binary, so it cannot rely on glibc's NSS; it reads the files itself, fresh on every call
//! (users may be added inside a running sandbox, and the files are small).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    /// Supplementary group ids (from `/etc/group` membership), including the primary gid.
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// A parsed snapshot of the account databases.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: Vec<(String, u32, u32, PathBuf, String)>,
    groups: Vec<Group>,
}

impl Accounts {
    pub fn load() -> Accounts {
        Self::load_from(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    /// Missing or unreadable files yield an empty database (then only numeric ids work).
    pub fn load_from(passwd: &Path, group: &Path) -> Accounts {
        let passwd = std::fs::read_to_string(passwd).unwrap_or_default();
        let group = std::fs::read_to_string(group).unwrap_or_default();
        Self::parse(&passwd, &group)
    }

    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 7 {
                    return None;
                }
                Some((f[0].to_owned(), f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5]), f[6].to_owned()))
            })
            .collect();
        let groups = group
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 4 {
                    return None;
                }
                Some(Group {
                    name: f[0].to_owned(),
                    gid: f[2].parse().ok()?,
                    members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
                })
            })
            .collect();
        Accounts { users, groups }
    }

    pub fn user(&self, name: &str) -> Option<User> {
        let (name, uid, gid, home, shell) = self.users.iter().find(|u| u.0 == name)?.clone();
        let mut groups = vec![gid];
        groups.extend(self.groups.iter().filter(|g| g.members.contains(&name)).map(|g| g.gid));
        groups.sort_unstable();
        groups.dedup();
        Some(User { name, uid, gid, home, shell, groups })
    }

    /// User name for a uid, else the number as text (like Go's envd).
    pub fn user_name(&self, uid: u32) -> String {
        self.users.iter().find(|u| u.1 == uid).map(|u| u.0.clone()).unwrap_or_else(|| uid.to_string())
    }

    /// Group name for a gid, else the number as text.
    pub fn group_name(&self, gid: u32) -> String {
        self.groups.iter().find(|g| g.gid == gid).map(|g| g.name.clone()).unwrap_or_else(|| gid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\nbroken line\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:user,other\nuser:x:1000:\n";

    #[test]
    fn resolves_users_with_supplementary_groups() {
        let a = Accounts::parse(PASSWD, GROUP);
        let u = a.user("user").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert_eq!(u.groups, vec![27, 1000]);
        assert!(a.user("nobody-here").is_none());
        assert_eq!(a.user_name(1000), "user");
        assert_eq!(a.group_name(27), "sudo");
        assert_eq!(a.group_name(4242), "4242");
    }
}
