//! Benchmark client for a running soulbox-envd (not a test; driven by `bench/envd.sh`).
//!
//! Measures the command round trip with a raw HTTP/1.1 client: one kept-alive TCP connection with
//! `TCP_NODELAY`, a hand-written `POST /process.Process/Start` carrying one Connect JSON envelope for
//! `/bin/true` (envd's own cost) and for `/bin/bash -l -c true` (what the SDK sends for `commands.run("true")`),
//! and the response read up to the end-stream envelope (flag `0x02`). The measurements take turns, one sample
//! each per round, so that other load on the machine falls on all of them alike. As a baseline it times a plain
//! spawn+wait of `/bin/true` (Rust's `Command` uses `posix_spawn` on Linux) and of `/bin/bash -l -c true` (what the
//! SDK's `commands.run("true")` executes), the latter as the sandbox user (`--bash-user`, default `user`, if it
//! exists) because a login shell's cost depends on that user's profile.
//!
//! ```text
//! cargo run -p soulbox-envd --release --example envd_bench -- [--addr 127.0.0.1:49983] [--token T] [-n 200]
//!     [--warmup 20] [--no-spawn] [--bash-user user]
//! ```
//! The token defaults to `$SOULBOX_ENVD_TOKEN`. Output: one `key=value` line per measurement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    addr: String,
    token: Option<String>,
    n: usize,
    warmup: usize,
    spawn: bool,
    bash_user: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        addr: "127.0.0.1:49983".to_owned(),
        token: std::env::var("SOULBOX_ENVD_TOKEN").ok().filter(|t| !t.is_empty()),
        n: 200,
        warmup: 20,
        spawn: true,
        bash_user: "user".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value("--addr")?,
            "--token" => args.token = Some(value("--token")?),
            "-n" | "--n" => args.n = value("-n")?.parse()?,
            "--warmup" => args.warmup = value("--warmup")?.parse()?,
            "--no-spawn" => args.spawn = false,
            "--bash-user" => args.bash_user = value("--bash-user")?,
            "-h" | "--help" => {
                println!("envd_bench [--addr HOST:PORT] [--token T] [-n N] [--warmup N] [--no-spawn] [--bash-user U]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if args.n == 0 {
        return Err("-n must be > 0".into());
    }
    Ok(args)
}

/// One kept-alive HTTP/1.1 connection to envd.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
    reusable: bool,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        Ok(Conn { reader: BufReader::with_capacity(64 * 1024, stream), writer, host: addr.to_owned(), reusable: true })
    }

    /// Sends `Process/Start` with `payload` (a JSON `StartRequest`) and reads the stream to its end-stream
    /// envelope. Returns the exit code from the `end` event.
    fn start(&mut self, token: Option<&str>, payload: &[u8]) -> Result<i64> {
        let mut req = Vec::with_capacity(512);
        write!(
            req,
            "POST /process.Process/Start HTTP/1.1\r\nHost: {}\r\nContent-Type: application/connect+json\r\n\
             Connect-Protocol-Version: 1\r\nContent-Length: {}\r\n",
            self.host,
            5 + payload.len()
        )?;
        if let Some(token) = token {
            write!(req, "X-Access-Token: {token}\r\n")?;
        }
        req.extend_from_slice(b"\r\n");
        req.push(0);
        req.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        req.extend_from_slice(payload);
        self.writer.write_all(&req)?;

        let head = self.read_head()?;
        if head.status != 200 {
            let mut body = Vec::new();
            let _ = Body::new(&mut self.reader, &head).read_to_end(&mut body);
            return Err(format!("HTTP {}: {}", head.status, String::from_utf8_lossy(&body)).into());
        }
        if head.content_type.as_deref() != Some("application/connect+json") {
            return Err(format!("unexpected content-type {:?}", head.content_type).into());
        }
        self.reusable = !head.close;
        let mut body = Body::new(&mut self.reader, &head);
        let mut exit_code = None;
        let mut saw_start = false;
        loop {
            let mut prefix = [0u8; 5];
            body.read_exact(&mut prefix)?;
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            let mut payload = vec![0u8; len];
            body.read_exact(&mut payload)?;
            let json: serde_json::Value = serde_json::from_slice(&payload)?;
            if prefix[0] & 0x02 != 0 {
                if let Some(err) = json.get("error") {
                    return Err(format!("end-stream error: {err}").into());
                }
                break;
            }
            let event = &json["event"];
            if event.get("start").is_some() {
                saw_start = true;
            } else if let Some(end) = event.get("end") {
                exit_code = Some(end.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0));
            }
        }
        // Consume the rest of the body (chunked terminator) so the connection can carry the next request.
        let mut rest = Vec::new();
        body.read_to_end(&mut rest)?;
        if !saw_start {
            return Err("no start event".into());
        }
        exit_code.ok_or_else(|| "no end event before end-stream".into())
    }

    fn read_head(&mut self) -> Result<Head> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err("connection closed before the response".into());
        }
        let status: u16 = line.split_whitespace().nth(1).ok_or("bad status line")?.parse()?;
        let http10 = line.starts_with("HTTP/1.0");
        let mut head = Head { status, chunked: false, length: None, content_type: None, close: http10 };
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err("connection closed in headers".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-length" => head.length = Some(value.parse()?),
                "content-type" => head.content_type = Some(value.to_owned()),
                "connection" => head.close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        Ok(head)
    }
}

struct Head {
    status: u16,
    chunked: bool,
    length: Option<u64>,
    content_type: Option<String>,
    close: bool,
}

/// A response body: chunked, fixed length, or (connection close) until EOF.
struct Body<'a> {
    r: &'a mut BufReader<TcpStream>,
    chunked: bool,
    /// Bytes left in the current chunk, or in the whole body when not chunked.
    left: u64,
    done: bool,
    until_eof: bool,
}

impl<'a> Body<'a> {
    fn new(r: &'a mut BufReader<TcpStream>, head: &Head) -> Body<'a> {
        Body {
            r,
            chunked: head.chunked,
            left: if head.chunked { 0 } else { head.length.unwrap_or(0) },
            done: !head.chunked && head.length == Some(0),
            until_eof: !head.chunked && head.length.is_none(),
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.until_eof {
            return self.r.read(buf);
        }
        if self.chunked && self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            let size_str = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_str, 16).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk size {line:?}: {e}"))
            })?;
            if size == 0 {
                // trailers until the empty line
                loop {
                    line.clear();
                    if self.r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(self.left as usize);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        if self.left == 0 {
            if self.chunked {
                let mut crlf = [0u8; 2];
                self.r.read_exact(&mut crlf)?;
            } else {
                self.done = true;
            }
        }
        Ok(n)
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    min: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    let pick = |p: usize| samples[((n * p).div_ceil(100)).saturating_sub(1).min(n - 1)];
    Stats { p50: pick(50), p99: pick(99), mean: samples.iter().sum::<Duration>() / n as u32, min: samples[0] }
}

fn report(name: &str, n: usize, s: &Stats) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name} n={n} p50_ms={:.3} p99_ms={:.3} mean_ms={:.3} min_ms={:.3}",
        ms(s.p50),
        ms(s.p99),
        ms(s.mean),
        ms(s.min)
    );
}

/// `/bin/true` itself: envd's own cost over a plain spawn.
const START_TRUE: &[u8] = br#"{"process":{"cmd":"/bin/true"},"stdin":false}"#;
/// Exactly what the SDK's `commands.run("true")` sends (as the default user): the SDK's own cost over this.
const START_BASH_LOGIN: &[u8] = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","true"]},"stdin":false}"#;

/// The `PATH` envd starts every process with (`process::spawn::DEFAULT_PATH`).
const ENVD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One timed operation; every measurement takes one sample per round, in turn, so that load from other work
/// on the machine falls on all of them alike and their ratios stay meaningful.
enum Op {
    Raw { payload: &'static [u8], conn: Option<Conn>, connections: usize },
    Spawn { program: &'static str, argv: &'static [&'static str], identity: Option<(String, u32, u32, String)> },
}

struct Measure {
    name: &'static str,
    op: Op,
    samples: Vec<Duration>,
}

impl Measure {
    fn raw(name: &'static str, payload: &'static [u8]) -> Measure {
        Measure { name, op: Op::Raw { payload, conn: None, connections: 0 }, samples: Vec::new() }
    }

    fn spawn(
        name: &'static str,
        program: &'static str,
        argv: &'static [&'static str],
        user: Option<&str>,
    ) -> Result<Measure> {
        let identity = match user {
            Some(u) => {
                let (uid, gid, home) = lookup_user(u).ok_or_else(|| format!("no user {u}"))?;
                Some((u.to_owned(), uid, gid, home))
            }
            None => None,
        };
        Ok(Measure { name, op: Op::Spawn { program, argv, identity }, samples: Vec::new() })
    }

    fn run_once(&mut self, args: &Args) -> Result<Duration> {
        match &mut self.op {
            Op::Raw { payload, conn, connections } => {
                if !conn.as_ref().is_some_and(|c| c.reusable) {
                    *conn = Some(Conn::open(&args.addr)?);
                    *connections += 1;
                }
                let Some(c) = conn.as_mut() else { return Err("no connection".into()) };
                let t = Instant::now();
                let code = c.start(args.token.as_deref(), payload)?;
                let elapsed = t.elapsed();
                if code != 0 {
                    return Err(format!("{}: the process exited with {code}", self.name).into());
                }
                Ok(elapsed)
            }
            Op::Spawn { program, argv, identity } => {
                let t = Instant::now();
                let mut cmd = Command::new(*program);
                cmd.args(*argv).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                if let Some((u, uid, gid, home)) = identity {
                    // fork+exec (std cannot posix_spawn with a uid change), with the environment envd gives a
                    // process (no LANG etc. from the caller, whose locale a shell would load).
                    cmd.uid(*uid).gid(*gid).env_clear().env("PATH", ENVD_PATH).env("HOME", &*home);
                    cmd.env("USER", &*u).env("LOGNAME", &*u).env("E2B_SANDBOX", "true").current_dir(&*home);
                }
                let status = cmd.status()?;
                let elapsed = t.elapsed();
                if !status.success() {
                    return Err(format!("{program} failed: {status}").into());
                }
                Ok(elapsed)
            }
        }
    }
}

/// uid, gid and home of `name` from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_owned())))?
    })
}

/// Whether we may switch users (std only: the effective uid from /proc).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut measures = vec![
        Measure::raw("raw_http_start_true", START_TRUE),
        Measure::raw("raw_http_start_bash_login", START_BASH_LOGIN),
    ];
    let mut bash_user = None;
    if args.spawn {
        measures.push(Measure::spawn("posix_spawn_true", "/bin/true", &[], None)?);
        bash_user = (running_as_root() && lookup_user(&args.bash_user).is_some()).then_some(args.bash_user.as_str());
        measures.push(Measure::spawn("spawn_bash_login_true", "/bin/bash", &["-l", "-c", "true"], bash_user)?);
    }
    for round in 0..args.warmup + args.n {
        for m in &mut measures {
            let elapsed = m.run_once(&args)?;
            if round >= args.warmup {
                m.samples.push(elapsed);
            }
        }
    }
    for m in measures {
        report(m.name, args.n, &stats(m.samples));
        if let Op::Raw { connections, .. } = m.op {
            println!("{}_connections={connections}", m.name);
        }
    }
    if args.spawn {
        println!("spawn_bash_login_user={}", bash_user.unwrap_or("(current)"));
    }
    Ok(())
}
