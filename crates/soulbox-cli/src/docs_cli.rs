//! `soulbox completions` and `soulbox man`: generated from the clap definition, so they never drift from the
//! flags the binary actually takes.

use std::path::Path;

use anyhow::Context;

pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> anyhow::Result<()> {
    // Into a buffer first: the generator panics on a write error (`| head` closing the pipe).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "soulbox", &mut buf);
    stdout(&buf)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Without `out`: the top page on stdout. With it: `soulbox.1` and one page per (sub)command, named like git's
/// (`soulbox-sandbox-list.1`), so `man soulbox-sandbox-list` works once the directory is on MANPATH.
pub fn man(cmd: clap::Command, out: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = out else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        return stdout(&buf);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cmd;
    // Subcommands get their full names (`soulbox-sandbox-list`) and global flags only after building.
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, "soulbox", dir, &mut written)?;
    eprintln!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut usize) -> anyhow::Result<()> {
    let page = cmd.clone().display_name(name.to_owned());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
