//! The booted pool on real sandboxes (root only; run under /tmp/soulbox-heavy.lock): pooled sandboxes are handed
//! out with the create's identity and share nothing, the pool's envd secret dies at the claim, creates that do
//! not fit go cold, and neither a close nor a crash with a full pool leaks anything. Own prefix `qa`, addresses
//! 10.231.0.0/24, data dir /var/tmp/soulbox-hA/rt.
mod common;
use common::*;
use soulbox_runtime::{NetworkPolicy, Runtime, RuntimeConfig, SandboxInfo, SandboxSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const SECRET_HEADER: &str = "X-Soulbox-Envd-Secret";

fn pool_config() -> RuntimeConfig {
    let mut cfg = config(0);
    cfg.data_dir = PathBuf::from("/var/tmp/soulbox-hA/rt");
    cfg.prefix = "qa".into();
    cfg.pool_net = std::net::Ipv4Addr::new(10, 231, 0, 0);
    cfg.pool_prefix_len = 24;
    cfg.booted_pool = BTreeMap::from([("test".to_string(), 2)]);
    cfg
}

/// Host objects of this runtime: netns and links named with its prefix, mounts below its data dir.
fn host_objects(cfg: &RuntimeConfig) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["/run/netns", "/sys/class/net"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&cfg.prefix) {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    let data = cfg.data_dir.to_string_lossy().into_owned();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        if let Some(point) = line.split(' ').nth(4).filter(|p| p.starts_with(&data)) {
            out.push(format!("mount {point}"));
        }
    }
    out
}

/// (id, envd secret) of every pooled sandbox's record on disk.
fn pooled(cfg: &RuntimeConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(cfg.sandboxes_dir()).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("sandbox.json")) else { continue };
        let rec: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if rec["status"] == "pooled" {
            let secret = rec["envdSecret"].as_str().expect("a pooled sandbox has a secret").to_string();
            out.push((e.file_name().to_string_lossy().into_owned(), secret));
        }
    }
    out
}

fn spec(tag: &str) -> SandboxSpec {
    let mut s = SandboxSpec::new("test");
    s.env = BTreeMap::from([("WHO".into(), tag.into())]);
    s.metadata = BTreeMap::from([("owner".into(), tag.into())]);
    s.access_token = Some(format!("token-{tag}"));
    s
}

async fn envd(
    info: &SandboxInfo,
    secret: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let addr = format!("{}:49983", info.ip.expect("ip"));
    let mut headers = vec![(SECRET_HEADER, secret), ("Content-Type", "application/connect+json")];
    headers.extend(token.map(|t| ("X-Access-Token", t)));
    let (status, body) = http_with(&addr, method, path, &headers, body, T).await.expect("envd answers");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// stdout of `cmd` run by envd in `info` (its own secret and token).
async fn run(info: &SandboxInfo, cmd: &str) -> String {
    let req = serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", cmd]}}).to_string();
    let mut body = vec![0u8];
    body.extend_from_slice(&(req.len() as u32).to_be_bytes());
    body.extend_from_slice(req.as_bytes());
    let secret = info.envd_secret.as_ref().expect("secret").expose();
    let (status, resp) =
        envd(info, secret, info.spec.access_token.as_deref(), "POST", "/process.Process/Start", &body).await;
    assert_eq!(status, 200, "{resp}");
    // The stream's data events carry base64 stdout; the tests' commands print short ASCII.
    let mut out = String::new();
    for part in resp.split("\"stdout\":\"").skip(1) {
        let b64 = part.split('"').next().unwrap_or_default();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
    out
}

/// The sandbox's firewall chain (`sb_<id>`) as `nft` lists it, its id and address replaced by placeholders.
fn chain(info: &SandboxInfo) -> String {
    let out = std::process::Command::new("nft").args(["list", "ruleset"]).output().expect("nft");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let head = format!("chain sb_{} {{", info.id);
    let mut lines = text.lines().skip_while(|l| !l.trim().starts_with(&head));
    let mut chain = Vec::new();
    for line in lines.by_ref() {
        chain.push(line.replace(&info.id, "ID").replace(&info.ip.unwrap().to_string(), "IP"));
        if line.trim() == "}" {
            break;
        }
    }
    chain.join("\n")
}

fn hits(rt: &Runtime) -> u64 {
    rt.booted_hits_misses().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sandboxes_get_fresh_identities_share_nothing_and_leak_nothing() {
    if skip_unless_root("booted_pool") {
        return;
    }
    let cfg = pool_config();
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    assert_eq!(host_objects(&cfg), Vec::<String>::new(), "leftovers of an earlier run");
    let mut h = harness_with(cfg.clone()).await;
    let rt = h.rt().clone();

    // No demand yet: one warm sandbox; the pool is invisible to list.
    rt.fill_booted_now().await;
    assert_eq!(rt.booted_len("test"), 1);
    assert!(rt.list().await.is_empty(), "pooled sandboxes are not listed");
    let mut pool_secrets: Vec<String> = pooled(&cfg).into_iter().map(|(_, s)| s).collect();

    let a = rt.create(spec("a")).await.expect("create a");
    assert_eq!(hits(&rt), 1, "a came from the pool");
    // One create in the last minute: the pool grows to two.
    rt.fill_booted_now().await;
    assert_eq!(rt.booted_len("test"), 2);
    pool_secrets.extend(pooled(&cfg).into_iter().map(|(_, s)| s));
    let boot_id_in_pool: Vec<String> = pooled(&cfg)
        .iter()
        .filter_map(|(id, _)| soulbox_runtime::procview::BootRecord::load(&cfg.sandboxes_dir().join(id)))
        .map(|b| b.boot_id)
        .collect();
    let before_b = soulbox_runtime::procview::boot_time_ns();
    let b = rt.create(spec("b")).await.expect("create b");
    assert_eq!(hits(&rt), 2, "b came from the pool");
    // b booted before `before_b`, but its uptime counts from its create, like a cold sandbox's; its boot id is
    // the one it booted with (its own).
    let b_boot = soulbox_runtime::procview::BootRecord::load(&cfg.sandboxes_dir().join(&b.id)).expect("b's boot");
    assert!(b_boot.boot_ns >= before_b, "b's uptime counts from its pool boot");
    assert!(boot_id_in_pool.contains(&b_boot.boot_id), "{boot_id_in_pool:?}");

    // Nothing shared: id, address, secret, token, environment, hostname, files.
    assert_ne!(a.id, b.id);
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.envd_secret, b.envd_secret);
    for (info, tag, other) in [(&a, "a", "b"), (&b, "b", "a")] {
        let secret = info.envd_secret.as_ref().unwrap().expose();
        assert!(!pool_secrets.iter().any(|s| s == secret), "the sandbox's secret is not the pool's");
        let (status, envs) = envd(info, secret, Some(&format!("token-{tag}")), "GET", "/envs", b"").await;
        assert_eq!(status, 200, "{envs}");
        let envs: BTreeMap<String, String> = serde_json::from_str(&envs).unwrap();
        assert_eq!(envs.get("WHO").map(String::as_str), Some(tag), "{envs:?}");
        let (status, _) = envd(info, secret, Some(&format!("token-{other}")), "GET", "/envs", b"").await;
        assert_eq!(status, 401, "the other sandbox's token does not work here");
        let (status, health) = envd(info, secret, None, "GET", "/health", b"").await;
        assert!(status == 200 && health.contains(&info.id), "{health}");
        // The pool's secrets (this sandbox's own pool secret among them) are refused now.
        for pool_secret in &pool_secrets {
            let (status, text) = envd(info, pool_secret, None, "GET", "/health", b"").await;
            assert_eq!(status, 403, "a pool secret still works: {text}");
        }
        assert_eq!(run(info, "cat /etc/hostname").await.trim(), info.id);
        assert_eq!(run(info, "echo $WHO").await.trim(), tag);
        assert_eq!(run(info, "cat /tmp/mark 2>/dev/null; echo -n").await, "", "{tag} sees a file it did not write");
        run(info, &format!("echo {tag} > /tmp/mark")).await;
        let got = rt.info(&info.id).await.unwrap();
        assert_eq!(got.spec.metadata.get("owner").map(String::as_str), Some(tag));
    }
    assert_eq!(run(&a, "cat /tmp/mark").await.trim(), "a");

    // A create with network rules from the pool: the record and the firewall take them (the same call as a
    // cold create's).
    rt.fill_booted_now().await;
    let mut closed = spec("c");
    closed.network = NetworkPolicy { allow_internet: false, ..NetworkPolicy::open() };
    let c = rt.create(closed.clone()).await.expect("create c");
    assert_eq!(hits(&rt), 3, "c came from the pool");
    assert_eq!(rt.info(&c.id).await.unwrap().spec.network, closed.network);

    // A create that is not the template's default sandbox goes cold; with the same rules its firewall chain is
    // c's, but for names and addresses.
    let mut bigger = closed.clone();
    bigger.memory_mb = Some(96);
    let d = rt.create(bigger).await.expect("create d");
    assert_eq!(hits(&rt), 3, "d did not come from the pool");
    assert!(!pool_secrets.iter().any(|s| Some(s.as_str()) == d.envd_secret.as_ref().map(|s| s.expose())));
    let (chain_c, chain_d, chain_a) = (chain(&c), chain(&d), chain(&a));
    assert!(!chain_c.is_empty());
    assert_eq!(chain_c, chain_d, "a pooled sandbox's rules are a cold one's");
    assert_ne!(chain_c, chain_a, "the closed policy is not the pool's open one");

    // A close with a full pool: the pooled sandboxes go, the users' stay.
    rt.fill_booted_now().await;
    let warm: Vec<String> = pooled(&cfg).into_iter().map(|(id, _)| id).collect();
    assert!(!warm.is_empty());
    drop(rt); // (the harness's clone: the runtime must end for the next open to get its lock)
    let rt = h.rt.take().unwrap();
    let closed = rt.close().await;
    drop(rt);
    // (the harness destroys what the next runtime holds, whatever fails below)
    h.rt = Some(open_after_drop(cfg.clone()).await.expect("reopen"));
    closed.expect("close");
    for id in &warm {
        assert!(!cfg.sandboxes_dir().join(id).exists(), "pooled {id} left its directory");
        assert!(!host_objects(&cfg).iter().any(|o| o.contains(&cfg.netns_name(id))), "pooled {id} left its netns");
    }

    // A crash with a full pool: the next open collects it.
    let rt = h.rt.take().unwrap();
    rt.fill_booted_now().await;
    let warm: Vec<String> = pooled(&cfg).into_iter().map(|(id, _)| id).collect();
    drop(rt);
    h.rt = Some(open_after_drop(cfg.clone()).await.expect("reopen after a crash"));
    assert!(!warm.is_empty());
    let rt = h.rt().clone();
    let listed: Vec<String> = rt.list().await.into_iter().map(|s| s.id).collect();
    for id in &warm {
        assert!(!listed.contains(id), "pooled {id} was adopted as a user sandbox");
        let netns = cfg.netns_name(id);
        assert!(!host_objects(&cfg).iter().any(|o| o.ends_with(&netns)), "pooled {id} left its netns");
    }
    for id in [&a.id, &b.id, &c.id, &d.id] {
        assert!(listed.contains(id), "{id} survived");
    }
    drop(rt);
    let rt = h.rt.take().unwrap();
    rt.destroy_all().await.expect("destroy_all");
    drop(rt);
    assert_eq!(host_objects(&cfg), Vec::<String>::new(), "everything is gone");
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
}
