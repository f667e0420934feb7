//! The firewall (root only; skipped with a message otherwise): private ranges dropped before
//! allowOut, the table repaired after someone deletes, flushes or edits it, and sandboxes still
//! fenced by their netns guard while the host table is gone.
//!
//! Network rule: traffic only to sandbox veths, to a listener this file runs on the host's gateway
//! address, and to the fake outside world this file builds itself — a netns on 203.0.113.64/26
//! ("the internet") that also carries 172.30.<n>.2/24, a private address standing in for the
//! metadata service and LAN hosts. Both are routed to the test's own veth before any packet is
//! sent; nothing goes to a real private or metadata address.
mod common;
use common::*;
use soulbox_runtime::{NetworkPolicy, Runtime, SandboxSpec};
use std::net::Ipv4Addr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

macro_rules! root_or_skip {
    ($name:expr) => {
        if skip_unless_root($name) {
            return;
        }
    };
}

/// Generous bound for event-driven waits (the repair itself takes milliseconds).
const REPAIR_BOUND: Duration = Duration::from_secs(30);

/// The fake outside world (routed back through the host): netns `sbns-out<n>` behind host link `sbnsout<n>`, with TCP services
/// answering `outside-ok` on 8080, `dns-ok` on 53, `http-ok` on 80 and `tls-ok` on 443 and echoing on 7, at the public address 203.0.113.66 (n=0) /
/// 203.0.113.70 (n=1) … and the private address 172.30.<n>.2.
struct Outside {
    ns: String,
    link: String,
    public: Ipv4Addr,
    private: Ipv4Addr,
    children: Vec<std::process::Child>,
}

/// The outside world's usual services.
const SERVICES: [(&str, [&str; 2]); 5] = [
    ("8080", ["/bin/echo", "outside-ok"]),
    ("53", ["/bin/echo", "dns-ok"]),
    ("7", ["/bin/cat", "-u"]),
    // What the egress gateway passes to: it never reads past the request head or the ClientHello.
    ("80", ["/bin/echo", "http-ok"]),
    ("443", ["/bin/echo", "tls-ok"]),
];

impl Outside {
    fn new(n: u8) -> Outside {
        Outside::with(n, &SERVICES)
    }

    /// An outside world with only `services` (port, program and its argument) of the usual ones.
    fn with(n: u8, services: &[(&str, [&str; 2])]) -> Outside {
        let ns = format!("sbns-out{n}");
        let link = format!("sbnsout{n}");
        Outside::cleanup(&ns, &link);
        let run = |a: &[&str]| {
            let st = std::process::Command::new("ip").args(a).status().unwrap();
            assert!(st.success(), "ip {a:?}");
        };
        // A /30 per test inside 203.0.113.64/26: host .64+4n+1, outside .64+4n+2. Never n = 4: the package
        // registries resolve to 203.0.113.80 on this machine, and the route to that /30 would take them away.
        assert_ne!(n, 4, "203.0.113.80/30 holds this machine's package registries");
        let host_pub = Ipv4Addr::new(203, 0, 113, 65 + 4 * n);
        let public = Ipv4Addr::new(203, 0, 113, 66 + 4 * n);
        let private = Ipv4Addr::new(172, 30, n, 2);
        run(&["netns", "add", &ns]);
        run(&["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        run(&["addr", "add", &format!("{host_pub}/30"), "dev", &link]);
        run(&["addr", "add", &format!("172.30.{n}.1/24"), "dev", &link]);
        run(&["link", "set", &link, "up"]);
        run(&["-n", &ns, "addr", "add", &format!("{public}/30"), "dev", "eth0"]);
        run(&["-n", &ns, "addr", "add", &format!("{private}/24"), "dev", "eth0"]);
        run(&["-n", &ns, "link", "set", "eth0", "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        // Routed back through the host like a real network: without the host's NAT a sandbox's
        // packets would still get answers, so only a drop keeps the outside out of reach.
        run(&["-n", &ns, "route", "add", "default", "via", &host_pub.to_string()]);
        let mut children = Vec::new();
        for (port, program) in services {
            children.push(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &ns, "busybox", "nc", "-ll", "-p", port, "-e", program[0], program[1]])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        let o = Outside { ns, link, public, private, children };
        o.wait_listening(&services.iter().map(|(port, _)| *port).collect::<Vec<_>>());
        o
    }

    /// Until the listeners on `ports` are up (`ss` inside the netns), bounded.
    fn wait_listening(&self, ports: &[&str]) {
        for _ in 0..500 {
            let out =
                std::process::Command::new("ip").args(["netns", "exec", &self.ns, "ss", "-ltnH"]).output().unwrap();
            let s = String::from_utf8_lossy(&out.stdout);
            if ports.iter().all(|p| s.contains(&format!(":{p} "))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fake outside world's listeners did not start");
    }

    fn cleanup(ns: &str, link: &str) {
        // The services' per-connection children (an echo whose client vanished) end with the netns.
        if let Ok(out) = std::process::Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ =
            std::process::Command::new("ip").args(["link", "del", link]).stderr(std::process::Stdio::null()).status();
        let _ =
            std::process::Command::new("ip").args(["netns", "del", ns]).stderr(std::process::Stdio::null()).status();
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        Outside::cleanup(&self.ns, &self.link);
    }
}

/// Whether the sandbox gets the answer of `ip:port`.
async fn reaches(rt: &Runtime, id: &str, ip: Ipv4Addr, port: u16, answer: &str) -> bool {
    let (_, out) = sh(rt, id, &format!("nc -w 2 {ip} {port} </dev/null")).await;
    out.contains(answer)
}

fn spec(policy: NetworkPolicy) -> SandboxSpec {
    let mut s = SandboxSpec::new("test");
    s.network = policy;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ranges_are_dropped_before_allow_out() {
    root_or_skip!("private_ranges_are_dropped_before_allow_out");
    let out = Outside::new(0);
    let mut cfg = config(71);
    // The fake private host doubles as the node's DNS server: it stays reachable on port 53.
    cfg.dns = vec![out.private];
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let allow_private = NetworkPolicy {
        allow_internet: false,
        allow_out: vec![format!("{}/32", out.private)],
        deny_out: vec![],
        ..Default::default()
    };
    let allow_all = NetworkPolicy {
        allow_internet: true,
        allow_out: vec!["0.0.0.0/0".into()],
        deny_out: vec![],
        ..Default::default()
    };
    for policy in [allow_private, allow_all.clone()] {
        let s = rt.create(spec(policy.clone())).await.unwrap();
        assert!(!reaches(rt, &s.id, out.private, 8080, "outside-ok").await, "{policy:?} opened a private address");
        rt.delete(&s.id).await.unwrap();
    }
    let s = rt.create(spec(allow_all)).await.unwrap();
    assert!(reaches(rt, &s.id, out.public, 8080, "outside-ok").await, "the internet is still open");
    assert!(reaches(rt, &s.id, out.private, 53, "dns-ok").await, "the node's DNS server is reachable");
    rt.delete(&s.id).await.unwrap();
    drop(h);

    // A node that allows private egress: allowOut opens it (today's order).
    let mut cfg = config(72);
    cfg.dns = vec![];
    cfg.allow_private_egress = true;
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let s = rt
        .create(spec(NetworkPolicy {
            allow_internet: false,
            allow_out: vec![format!("{}/32", out.private)],
            deny_out: vec![],
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(reaches(rt, &s.id, out.private, 8080, "outside-ok").await, "allow_private_egress lets allowOut open it");
    let open = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert!(
        !reaches(rt, &open.id, out.private, 8080, "outside-ok").await,
        "without allowOut private ranges stay closed"
    );
}

/// Log lines of this test binary (the firewall's warnings are asserted on).
fn log_lines() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                log_lines().lock().unwrap().extend_from_slice(b);
                std::io::stderr().write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt().with_ansi(false).with_writer(|| Sink).try_init();
        Mutex::new(Vec::new())
    })
}

fn logged(needle: &str, table: &str) -> bool {
    String::from_utf8_lossy(&log_lines().lock().unwrap()).lines().any(|l| l.contains(needle) && l.contains(table))
}

/// Waits (event-driven, bounded) for the next repair after `seen`.
async fn next_repair(repairs: &mut tokio::sync::watch::Receiver<u64>, seen: u64) -> u64 {
    tokio::time::timeout(REPAIR_BOUND, repairs.wait_for(|n| *n > seen))
        .await
        .expect("the table was not repaired in time")
        .map(|n| *n)
        .unwrap()
}

fn nft(args: &[&str]) {
    let st = std::process::Command::new("nft").args(args).status().unwrap();
    assert!(st.success(), "nft {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_flushed_table_is_rebuilt() {
    root_or_skip!("deleted_or_flushed_table_is_rebuilt");
    log_lines();
    let out = Outside::new(1);
    let mut cfg = config(73);
    cfg.pool_size = 1;
    let table = cfg.nft_table();
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let offline = rt.create(spec(NetworkPolicy { allow_internet: false, ..Default::default() })).await.unwrap();
    let denied = rt
        .create(spec(NetworkPolicy {
            allow_internet: true,
            allow_out: vec![],
            deny_out: vec!["203.0.113.64/26".into()],
            ..Default::default()
        }))
        .await
        .unwrap();
    let sandboxes = (offline.id.as_str(), denied.id.as_str(), denied.ip.unwrap());
    assert_isolated(rt, sandboxes, out.public).await;
    let mut repairs = rt.firewall_repairs();
    let mut seen = *repairs.borrow();

    // 1. someone deletes the table
    nft(&["delete", "table", "inet", &table]);
    seen = next_repair(&mut repairs, seen).await;
    assert_isolated(rt, sandboxes, out.public).await;
    assert!(logged("table inet soulbox_tq73 is gone", &table), "the log says what happened");
    assert!(logged("firewall table restored", &table), "the log says it was restored");

    // 2. someone flushes it (a host firewall reload that flushes only our table)
    nft(&["flush", "table", "inet", &table]);
    seen = next_repair(&mut repairs, seen).await;
    assert_isolated(rt, sandboxes, out.public).await;
    assert!(logged("chain forward has 0 rules", &table), "the log says what happened");

    // 3. someone slips an accept into our forward chain
    nft(&["insert", "rule", "inet", &table, "forward", "accept"]);
    next_repair(&mut repairs, seen).await;
    assert_isolated(rt, sandboxes, out.public).await;

    // The pool slot and the sandboxes made before the repairs still work as before.
    let extra = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert!(
        reaches(rt, &extra.id, out.public, 8080, "outside-ok").await,
        "an open sandbox made after the repairs reaches the outside"
    );
}

/// The internet-off sandbox and the denyOut one cannot reach the outside, nor each other.
async fn assert_isolated(rt: &Runtime, (offline, denied, denied_ip): (&str, &str, Ipv4Addr), public: Ipv4Addr) {
    assert!(!reaches(rt, offline, public, 8080, "outside-ok").await, "internet-off sandbox reached the outside");
    assert!(!reaches(rt, denied, public, 8080, "outside-ok").await, "denyOut sandbox reached the outside");
    // sandbox → sandbox stays dropped (envd listens on the neighbour's 49983)
    let (_, o) = sh(rt, offline, &format!("nc -w 2 {denied_ip} 49983 </dev/null && echo reached")).await;
    assert!(!o.contains("reached"), "sandbox reached its neighbour: {o}");
}

/// A TCP listener of the test's own on the host's gateway address (the address every host veth
/// carries), answering `host-ok`: stands in for a host service a sandbox must not reach.
struct HostService(tokio::task::JoinHandle<()>);

impl HostService {
    async fn new(addr: Ipv4Addr, port: u16) -> HostService {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind((addr, port)).await.expect("bind the host service");
        HostService(tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.write_all(b"host-ok\n").await;
            }
        }))
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_holds_while_the_host_table_is_gone() {
    root_or_skip!("isolation_holds_while_the_host_table_is_gone");
    let out = Outside::new(2);
    let cfg = config(77);
    let table = cfg.nft_table();
    let gateway = cfg.gateway();
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let offline = rt.create(spec(NetworkPolicy { allow_internet: false, ..Default::default() })).await.unwrap();
    let open = rt.create(SandboxSpec::new("test")).await.unwrap();
    let _host = HostService::new(gateway, 7777).await;
    let open_ip = open.ip.unwrap();
    let check = |when: &'static str| {
        let (offline, open) = (offline.id.clone(), open.id.clone());
        async move {
            assert!(
                !reaches(rt, &offline, out.public, 8080, "outside-ok").await,
                "{when}: internet-off sandbox reached the outside"
            );
            let (_, o) = sh(rt, &offline, &format!("nc -w 2 {open_ip} 49983 </dev/null && echo reached")).await;
            assert!(!o.contains("reached"), "{when}: sandbox reached its neighbour: {o}");
            for id in [&offline, &open] {
                assert!(!reaches(rt, id, gateway, 7777, "host-ok").await, "{when}: sandbox reached a host service");
            }
            assert!(
                reaches(rt, &open, out.public, 8080, "outside-ok").await,
                "{when}: the open sandbox lost the outside"
            );
        }
    };
    check("with the host table").await;
    // Nothing watches the table any more (as while no runtime runs), and it goes.
    rt.close().await.unwrap();
    nft(&["delete", "table", "inet", &table]);
    assert!(!table_exists(&table));
    check("without the host table").await;
}

fn table_exists(table: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Waits (bounded, polling the sandbox's file) until `file` in the sandbox holds `needle`; returns the file.
async fn file_holds(rt: &Runtime, id: &str, file: &str, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..600 {
        let (_, out) = sh(rt, id, &format!("cat {file} 2>/dev/null")).await;
        if out.contains(needle) {
            return out;
        }
        last = out;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{file} never held {needle:?}: {last:?}");
}

/// A live network update (E2B's `PUT /sandboxes/{id}/network`): tightening cuts open connections the new
/// policy forbids — one that only reads ends at once, one that writes gets nothing through — and new ones
/// follow it; loosening opens again; the policy survives in the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_update_cuts_forbidden_connections_and_reopens() {
    root_or_skip!("a_live_update_cuts_forbidden_connections_and_reopens");
    log_lines();
    let out = Outside::new(3);
    let h = harness(78).await;
    let rt = h.rt();
    let s = rt.create(SandboxSpec::new("test")).await.unwrap();
    assert!(reaches(rt, &s.id, out.public, 8080, "outside-ok").await);
    let ip = out.public;
    // Two open connections to the outside's echo: a reader that sends once and then only waits, and a writer
    // that sends again when told to.
    // (`exit=` is written when nc ends, not when its whole pipeline does.)
    let reader = format!("(echo first; sleep 600) | (nc {ip} 7 > /tmp/reader 2>&1; echo exit=$? >> /tmp/reader)");
    let writer = format!(
        "(echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second; sleep 600) | (nc {ip} 7 > /tmp/writer 2>&1; echo exit=$? >> /tmp/writer)"
    );
    for script in [reader, writer] {
        sh(rt, &s.id, &format!("setsid sh -c '{script}' </dev/null >/dev/null 2>&1 &")).await;
    }
    file_holds(rt, &s.id, "/tmp/reader", "first").await;
    file_holds(rt, &s.id, "/tmp/writer", "first").await;

    let tight = NetworkPolicy {
        allow_internet: true,
        allow_out: vec![],
        deny_out: vec!["203.0.113.0/24".into()],
        ..Default::default()
    };
    rt.update_network(&s.id, tight.clone()).await.unwrap();
    // The reader's connection is gone without it sending anything (its socket was destroyed).
    file_holds(rt, &s.id, "/tmp/reader", "exit=").await;
    sh(rt, &s.id, "touch /tmp/go").await;
    let written = file_holds(rt, &s.id, "/tmp/writer", "exit=").await;
    assert!(!written.contains("second"), "an open connection outlived the update: {written:?}");
    assert!(!reaches(rt, &s.id, ip, 8080, "outside-ok").await, "a new connection ignored the update");
    assert_eq!(rt.info(&s.id).await.unwrap().spec.network, tight);

    // Loosened: allow wins over deny, as at create.
    let loose = NetworkPolicy { allow_out: vec![format!("{ip}/32")], ..tight };
    rt.update_network(&s.id, loose).await.unwrap();
    assert!(reaches(rt, &s.id, ip, 8080, "outside-ok").await, "the update did not open the allowed host");
    // Cleared.
    rt.update_network(&s.id, NetworkPolicy::open()).await.unwrap();
    assert!(reaches(rt, &s.id, ip, 8080, "outside-ok").await);
    // A bad entry changes nothing.
    let bad = NetworkPolicy {
        allow_internet: false,
        allow_out: vec!["not-an-address".into()],
        deny_out: vec![],
        ..Default::default()
    };
    assert!(rt.update_network(&s.id, bad).await.is_err());
    assert!(reaches(rt, &s.id, ip, 8080, "outside-ok").await);
    assert_eq!(rt.info(&s.id).await.unwrap().spec.network, NetworkPolicy::open());
}

/// Host-name rules through the node's egress gateway: HTTP by `Host`, TLS by SNI, wildcards, allow over a
/// deny-all; a forged SNI (an allowed name at another address), a name that resolves to a private address, and
/// the gateway's own port are refused; a live update moves the allowed names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_pass_named_http_and_tls_through_the_gateway() {
    root_or_skip!("host_rules_pass_named_http_and_tls_through_the_gateway");
    log_lines();
    let out = Outside::new(5);
    // A second address in the outside world, where no allowed name points (203.0.113.90, outside every Outside's
    // /30), routed there from the host.
    let spoof_target = Ipv4Addr::new(203, 0, 113, 90);
    let ip =
        |args: &[&str]| assert!(std::process::Command::new("ip").args(args).status().unwrap().success(), "{args:?}");
    ip(&["-n", &out.ns, "addr", "add", &format!("{spoof_target}/32"), "dev", "eth0"]);
    ip(&["route", "add", &format!("{spoof_target}/32"), "via", &out.public.to_string(), "dev", &out.link]);
    let _dns = FakeDns::start(
        &out.ns,
        vec![
            ("good.test", out.public),
            ("a.wild.test", out.public),
            ("bad.test", out.public),
            ("other.test", spoof_target),
            ("meta.test", out.private),
        ],
    );
    let mut cfg = config(79);
    cfg.dns = vec![out.public];
    let h = harness_with(cfg.clone()).await;
    let rt = h.rt();
    let policy = NetworkPolicy {
        allow_internet: true,
        deny_out: vec!["0.0.0.0/0".into()],
        allow_hosts: vec!["good.test".into(), "*.wild.test".into(), "other.test".into(), "meta.test".into()],
        ..Default::default()
    };
    let s = rt.create(spec(policy)).await.unwrap();
    let http =
        |host: &str| format!("printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 {} 80", out.public);
    let tls = |name: &str, to: Ipv4Addr| format!("printf '{}' | nc -w 3 {to} 443", client_hello_escaped(name));
    let answers = |script: String, answer: &'static str| {
        let id = s.id.clone();
        async move { sh(rt, &id, &script).await.1.contains(answer) }
    };
    assert!(answers(http("good.test"), "http-ok").await, "an allowed Host");
    assert!(answers(http("GOOD.test:80"), "http-ok").await, "names compare without case and port");
    assert!(answers(http("a.wild.test"), "http-ok").await, "a wildcard");
    assert!(!answers(http("bad.test"), "http-ok").await, "a Host not allowed");
    assert!(answers(tls("good.test", out.public), "tls-ok").await, "an allowed SNI");
    assert!(!answers(tls("bad.test", out.public), "tls-ok").await, "an SNI not allowed");
    assert!(answers(tls("other.test", spoof_target), "tls-ok").await, "the second address is reachable by its name");
    assert!(
        !answers(tls("good.test", spoof_target), "tls-ok").await,
        "an allowed SNI at an address it does not resolve to"
    );
    assert!(!answers(tls("meta.test", out.private), "tls-ok").await, "a name resolving to a private address");
    assert!(!reaches(rt, &s.id, out.public, 8080, "outside-ok").await, "other ports follow the address rules");
    // DNS goes through the gateway too: allowed names resolve, a name the policy can never reach fails at once.
    let (_, found) = sh(rt, &s.id, "nslookup good.test").await;
    // (The fake DNS server is at the outside's address, so `Server:` names it either way; `Name:` is an answer.)
    assert!(
        found.contains("Name:") && found.contains(&out.public.to_string()),
        "an allowed name did not resolve: {found}"
    );
    let (_, refused) = sh(rt, &s.id, "nslookup bad.test").await;
    assert!(refused.contains("NXDOMAIN") && !refused.contains("Name:"), "a denied name resolved: {refused}");
    // The node's own address on the outside link: the gateway connects from the node, and must not hand a sandbox
    // the node's services (which the firewall's input chain keeps from it).
    let host_side = Ipv4Addr::new(203, 0, 113, 65 + 4 * 5);
    let node_service = std::net::TcpListener::bind((host_side, 80)).unwrap();
    node_service.set_nonblocking(true).unwrap();
    let own =
        NetworkPolicy { allow_out: vec![format!("{host_side}/32")], ..rt.info(&s.id).await.unwrap().spec.network };
    rt.update_network(&s.id, own).await.unwrap();
    let (_, got) = sh(rt, &s.id, &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 3 nc {host_side} 80")).await;
    assert!(node_service.accept().is_err(), "the gateway connected a sandbox to the node's own address: {got}");
    let back = NetworkPolicy { allow_out: vec![], ..rt.info(&s.id).await.unwrap().spec.network };
    rt.update_network(&s.id, back).await.unwrap();
    let gateway = format!("{}:{}", cfg.gateway(), cfg.egress_gateway_port);
    let (_, direct) =
        sh(rt, &s.id, &format!("echo x | nc -w 2 {} {} && echo connected", cfg.gateway(), cfg.egress_gateway_port))
            .await;
    assert!(!direct.contains("connected"), "the gateway ({gateway}) was reachable without the redirect: {direct}");

    // A live update moves the names: good.test is no longer allowed, bad.test is.
    let moved = NetworkPolicy { allow_hosts: vec!["bad.test".into()], ..rt.info(&s.id).await.unwrap().spec.network };
    rt.update_network(&s.id, moved).await.unwrap();
    assert!(!answers(http("good.test"), "http-ok").await, "the update did not take good.test away");
    assert!(answers(http("bad.test"), "http-ok").await, "the update did not allow bad.test");
    // Without host rules nothing is redirected any more: the deny-all holds for 80 too.
    let plain = NetworkPolicy { allow_internet: true, deny_out: vec!["0.0.0.0/0".into()], ..Default::default() };
    rt.update_network(&s.id, plain).await.unwrap();
    assert!(!answers(http("bad.test"), "http-ok").await);
}

/// E2B's `egressProxy`: all of a sandbox's TCP goes through a SOCKS5 proxy (the proxy's log shows each tunnel),
/// after the policy (a denied address never reaches the proxy); bad credentials fail the connection, never a
/// direct fallback; an update without the proxy sends traffic straight out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_proxy_tunnels_all_tcp_and_fails_closed() {
    root_or_skip!("an_egress_proxy_tunnels_all_tcp_and_fails_closed");
    log_lines();
    let out = Outside::new(7);
    let socks = FakeSocks::start(&out.ns, 1080, Some(("agent", "s3cret")));
    let h = harness(80).await;
    let rt = h.rt();
    let proxy = |password: &str| soulbox_runtime::SocksProxy {
        address: format!("{}:1080", out.public),
        username: Some("agent".into()),
        password: Some(password.into()),
    };
    let tunnelled = NetworkPolicy { allow_internet: true, egress_proxy: Some(proxy("s3cret")), ..Default::default() };
    let s = rt.create(spec(tunnelled.clone())).await.unwrap();
    let target = format!("CONNECT {}:8080", out.public);
    assert!(reaches(rt, &s.id, out.public, 8080, "outside-ok").await, "through the proxy");
    assert!(socks.logged().contains(&target), "the proxy did not carry it: {:?}", socks.logged());

    // The policy comes first: a denied address never reaches the proxy.
    let denied = NetworkPolicy { deny_out: vec![format!("{}/32", out.public)], ..tunnelled.clone() };
    rt.update_network(&s.id, denied).await.unwrap();
    let before = socks.logged().len();
    assert!(!reaches(rt, &s.id, out.public, 8080, "outside-ok").await, "a denied address was reached");
    assert_eq!(socks.logged().len(), before, "a denied connection reached the proxy: {:?}", socks.logged());

    // Bad credentials: the connection fails; nothing goes out directly.
    let wrong = NetworkPolicy { egress_proxy: Some(proxy("wrong")), ..tunnelled };
    rt.update_network(&s.id, wrong).await.unwrap();
    assert!(!reaches(rt, &s.id, out.public, 8080, "outside-ok").await, "fell back to a direct connection");
    assert!(socks.logged().iter().any(|l| l == "auth refused"), "{:?}", socks.logged());

    // Without the proxy: straight out again, the proxy sees nothing.
    rt.update_network(&s.id, NetworkPolicy::open()).await.unwrap();
    let before = socks.logged().len();
    assert!(reaches(rt, &s.id, out.public, 8080, "outside-ok").await);
    assert_eq!(socks.logged().len(), before, "{:?}", socks.logged());
}

/// The suites' header echo (tests/lib): answers every GET with the request's headers.
const HEADER_ECHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/lib/header_echo.py");

/// Secrets for the gateway: one known name, and a record of who asked.
struct FakeSecrets {
    asked: Mutex<Vec<(String, String)>>,
}

impl soulbox_runtime::egress_secrets::EgressSecrets for FakeSecrets {
    fn secret<'a>(&'a self, sandbox: &'a str, name: &'a str) -> soulbox_runtime::egress_secrets::SecretFuture<'a> {
        self.asked.lock().unwrap().push((sandbox.to_owned(), name.to_owned()));
        let value = (name == "TOKEN").then(|| "s3cr3t-value".to_string());
        Box::pin(async move { Ok(value) })
    }
}

/// A test CA and a server certificate from it for `names` (PEM: CA, certificate, key).
fn test_server_certificate(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "the outside world's CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// E2B's header rules: HTTP and HTTPS to a host with rules get its headers, `${e2b.secrets.NAME}` filled in by
/// the gateway; other hosts pass untouched; an unknown secret, a certificate the destination cannot show, and a
/// second host on the same connection fail with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_inject_secrets_over_http_and_https() {
    root_or_skip!("header_rules_inject_secrets_over_http_and_https");
    log_lines();
    let out = Outside::with(8, &SERVICES[..3]);
    let _dns = FakeDns::start(
        &out.ns,
        vec![
            ("api.test", out.public),
            ("other.test", out.public),
            ("a.wild.test", out.public),
            ("bad.test", out.public),
        ],
    );
    // A second address of the outside world, where api.test does not point (outside every Outside's /30).
    let elsewhere = Ipv4Addr::new(203, 0, 113, 101);
    let ip =
        |args: &[&str]| assert!(std::process::Command::new("ip").args(args).status().unwrap().success(), "{args:?}");
    ip(&["-n", &out.ns, "addr", "add", &format!("{elsewhere}/32"), "dev", "eth0"]);
    ip(&["route", "add", &format!("{elsewhere}/32"), "via", &out.public.to_string(), "dev", &out.link]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_server_certificate(&["api.test", "other.test", "a.wild.test"]);
    for (file, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.path().join(file), pem).unwrap();
    }
    let echo = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &out.ns, "python3", HEADER_ECHO])
            .args(args)
            .spawn()
            .unwrap()
    };
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let mut servers = [echo(&["80".as_ref()]), echo(&["443".as_ref(), cert_path.as_os_str(), key_path.as_os_str()])];
    out.wait_listening(&["80", "443"]);

    let mut cfg = config(84);
    cfg.dns = vec![out.public];
    let egress_ca = soulbox_runtime::egress_ca::CaPem::generate().unwrap();
    cfg.egress_ca = Some(egress_ca.clone());
    cfg.egress_trusted_ca = Some(dir.path().join("ca.pem"));
    let h = harness_with(cfg).await;
    let rt = h.rt();
    let secrets = std::sync::Arc::new(FakeSecrets { asked: Mutex::new(vec![]) });
    rt.set_egress_secrets(secrets.clone());
    let rule = |host: &str, headers: &[(&str, &str)]| soulbox_runtime::spec::HeaderRule {
        host: host.into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let policy = NetworkPolicy {
        allow_internet: true,
        rules: vec![
            rule("api.test", &[("Authorization", "Bearer ${e2b.secrets.TOKEN}"), ("X-Plain", "yes")]),
            rule("*.wild.test", &[("X-Key", "${e2b.secrets.NOPE}")]),
            rule("bad.test", &[("X-Plain", "yes")]),
        ],
        ..Default::default()
    };
    let s = rt.create(spec(policy)).await.unwrap();
    // The request comes from the sandbox's network namespace (host curl: the busybox template has no TLS client
    // that speaks ECDSA), trusting what a sandbox trusts: the installation's egress CA and the public CAs (here:
    // the outside world's); names are pinned (`--resolve`), so the only DNS lookups are the gateway's, to the fake
    // outside world.
    let netns = h.cfg.netns_name(&s.id);
    std::fs::write(dir.path().join("egress-ca.pem"), format!("{}{ca}", egress_ca.cert_pem)).unwrap();
    let get_at = |url: &str, at: Ipv4Addr| {
        let host = url.split("://").nth(1).unwrap().trim_end_matches('/');
        let port = if url.starts_with("https") { 443 } else { 80 };
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &netns, "curl", "-sS", "-i", "--max-time", "10", "--noproxy", "*", "--cacert"])
            .arg(dir.path().join("egress-ca.pem"))
            .args(["--resolve", &format!("{host}:{port}:{at}"), url])
            .output()
            .unwrap();
        // Header names compare without case.
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        async move { text.to_ascii_lowercase() }
    };
    let get = |url: &str| get_at(url, out.public);
    for scheme in ["http", "https"] {
        let got = get(&format!("{scheme}://api.test/")).await;
        assert!(got.contains("authorization: bearer s3cr3t-value") && got.contains("x-plain: yes"), "{scheme}: {got}");
        let other = get(&format!("{scheme}://other.test/")).await;
        assert!(other.contains("host: other.test") && !other.contains("authorization"), "{scheme}: {other}");
        let missing = get(&format!("{scheme}://a.wild.test/")).await;
        assert!(missing.contains("502") && !missing.contains("x-key"), "{scheme}: {missing}");
    }
    assert!(secrets.asked.lock().unwrap().iter().all(|(id, _)| *id == s.id), "secrets are asked for by sandbox");
    // The destination cannot show a certificate for bad.test: the gateway does not send it the request.
    let bad = get("https://bad.test/").await;
    assert!(bad.contains("502") && !bad.contains("x-plain"), "{bad}");
    // A ruled name sent to an address it does not resolve to gets nothing, least of all the secret (the gateway
    // would otherwise hand it to whoever listens there).
    for scheme in ["http", "https"] {
        let spoofed = get_at(&format!("{scheme}://api.test/"), elsewhere).await;
        assert!(!spoofed.contains("s3cr3t") && !spoofed.contains("200 ok"), "{scheme}: {spoofed}");
    }
    // One connection, one host: a second request for another host on it is refused.
    let two = format!(
        "printf 'GET / HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n' | nc -w 3 {} 80",
        out.public
    );
    let (_, both) = sh(rt, &s.id, &two).await;
    assert!(both.contains("s3cr3t-value") && both.contains("421"), "{both}");
    // The sandbox trusts the installation's CA (envd put it in place) and never holds its key.
    // (The variables that point tools at it are envd's to set: tests/e2e checks them through the SDK.)
    let (_, bundle) = sh(rt, &s.id, "cat /usr/local/share/soulbox/ca-bundle.pem").await;
    assert!(bundle.contains(egress_ca.cert_pem.trim()), "the egress CA is not in the sandbox's bundle: {bundle}");
    let scan = |needle: &str| {
        let script = format!(
            "for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rlsF '{needle}' $d;; esac; done; \
             grep -lsF '{needle}' /proc/1/environ /proc/self/environ; echo scanned"
        );
        let (rt, id) = (rt, s.id.clone());
        async move { sh(rt, &id, &script).await.1 }
    };
    // The scan finds what is there (a line of the certificate) ...
    let cert_line = egress_ca.cert_pem.lines().nth(2).unwrap();
    assert!(scan(cert_line).await.contains("/usr/local/share/soulbox/ca-bundle.pem"), "the scan finds nothing");
    // ... and no line of the key, nor the secret's value outside what the echo server sent back.
    for needle in [egress_ca.key_pem.lines().nth(1).unwrap(), egress_ca.key_pem.lines().nth(2).unwrap(), "s3cr3t-value"]
    {
        let found = scan(needle).await;
        assert!(found.trim_end().ends_with("scanned") && !found.contains('/'), "{needle:?} is in the sandbox: {found}");
    }
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    let _ = std::process::Command::new("ip").args(["route", "del", &format!("{elsewhere}/32")]).status();
}
