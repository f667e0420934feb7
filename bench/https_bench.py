"""HTTPS vs plain HTTP through `soulbox server` in one run (not a test): the same sandbox, the same port, the
server started first without TLS, then (sandboxes survive a restart) with `[http] tls_cert`/`tls_key`.

Measured with curl (one client for both, so the client's cost is alike): a 64 MiB download from a
`python3 -m http.server` inside the sandbox through the proxy (`<port>-<id>.<domain>` host routing), small
requests to that port on one kept-alive connection and on a new connection each (TLS handshake included), and
`GET /health` on the API.

Usage (as root; the newest SDK's venv from tests/compat):
  tests/compat/.venv-latest/bin/python bench/https_bench.py [--soulbox target/release/soulbox] [--port 3195]
Environment: SOULBOX_TEMPLATE_DIR (default /var/tmp/soulbox-e2e/node: the e2e suite's built base).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

from e2b import Sandbox

DOMAIN = "soulbox.test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def make_cert(tls_dir):
    os.makedirs(tls_dir, exist_ok=True)
    if os.path.exists(f"{tls_dir}/cert.pem"):
        return
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-days", "3650", "-subj", "/CN=bench CA", "-keyout", f"{tls_dir}/ca.key",
       "-out", f"{tls_dir}/ca.pem")
    sh("openssl", "req", *ec, "-subj", f"/CN=*.{DOMAIN}", "-keyout", f"{tls_dir}/key.pem", "-out", f"{tls_dir}/c.csr")
    ext = f"{tls_dir}/ext.cnf"
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:*.{DOMAIN},DNS:api.{DOMAIN},IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", f"{tls_dir}/c.csr", "-CA", f"{tls_dir}/ca.pem", "-CAkey", f"{tls_dir}/ca.key",
       "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", f"{tls_dir}/cert.pem")


class Server:
    def __init__(self, args, tls):
        self.args, self.tls = args, tls
        cfg = "warm_pool = 0\n"
        if tls:
            cfg += f'[http]\ntls_cert = "{args.data}/tls/cert.pem"\ntls_key = "{args.data}/tls/key.pem"\n'
        with open(f"{args.data}/config.toml", "w") as f:
            f.write(cfg)
        self.log = open(f"{args.data}/server-{'https' if tls else 'http'}.log", "w")
        self.proc = subprocess.Popen(
            [args.soulbox, "--data-dir", args.data, "server", "--listen", f"127.0.0.1:{args.port}",
             "--envd-path", args.envd, "--domain", DOMAIN, "--prefix", args.prefix, "--network-pool", args.pool],
            stdout=self.log, stderr=subprocess.STDOUT)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{args.port}"
        ctx = None
        if tls:
            import ssl
            ctx = ssl.create_default_context(cafile=f"{args.data}/tls/ca.pem")
        for _ in range(1800):
            if self.proc.poll() is not None:
                sys.exit(f"server exited; see {self.log.name}")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1, context=ctx).read()
                return
            except OSError:
                time.sleep(0.2)
        sys.exit("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def curl_times(args, urls, *extra):
    """Each transfer's time_total (s), one curl process for all URLs (connection reuse unless told)."""
    resolve = [f"8080-{args.sandbox}.{DOMAIN}:{args.port}:127.0.0.1", f"api.{DOMAIN}:{args.port}:127.0.0.1"]
    cmd = ["curl", "-sS", "--noproxy", "*", "--cacert", f"{args.data}/tls/ca.pem"]
    for r in resolve:
        cmd += ["--resolve", r]
    cmd += list(extra)
    for u in urls:
        cmd += ["-o", "/dev/null", "-w", "%{time_total} %{speed_download} %{http_code}\\n", u]
    out = sh(*cmd).split()
    rows = [out[i:i + 3] for i in range(0, len(out), 3)]
    bad = [r for r in rows if r[2] != "200"]
    if bad:
        sys.exit(f"non-200 answers: {bad[:3]}")
    return [float(r[0]) for r in rows], [float(r[1]) for r in rows]


def measure(args, scheme):
    port_url = f"{scheme}://8080-{args.sandbox}.{DOMAIN}:{args.port}"
    api_url = f"{scheme}://api.{DOMAIN}:{args.port}"
    result = {}
    curl_times(args, [f"{port_url}/small"] * 20)  # warm the proxy's upstream pool
    t, _ = curl_times(args, [f"{port_url}/small"] * args.n)
    result["port small, kept alive p50 ms"] = statistics.median(t[1:]) * 1000
    t, _ = curl_times(args, [f"{port_url}/small"] * args.n_new, "-H", "Connection: close")
    result["port small, new connection p50 ms"] = statistics.median(t) * 1000
    t, _ = curl_times(args, [f"{api_url}/health"] * args.n)
    result["API /health kept alive p50 ms"] = statistics.median(t[1:]) * 1000
    speeds = []
    for _ in range(args.downloads):
        _, s = curl_times(args, [f"{port_url}/big"])
        speeds.append(s[0] / (1 << 20))
    result["64 MiB download MiB/s (median)"] = statistics.median(speeds)
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--soulbox", default=f"{ROOT}/target/release/soulbox")
    p.add_argument("--envd", default=f"{ROOT}/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd")
    p.add_argument("--data", default="/var/tmp/soulbox-h5-bench")
    p.add_argument("--port", type=int, default=3195)
    p.add_argument("--prefix", default="sbh5")
    p.add_argument("--pool", default="10.235.0.0/16")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--n-new", type=int, default=100)
    p.add_argument("--downloads", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("SOULBOX_TEMPLATE_DIR", "/var/tmp/soulbox-e2e/node")
    os.makedirs(args.data, exist_ok=True)
    make_cert(f"{args.data}/tls")
    out = sh(args.soulbox, "--data-dir", args.data, "keys", "create", "--name", f"bench-{int(time.time())}")
    key = next(w for w in out.split() if w.startswith("E2B_API_KEY=")).split("=", 1)[1]

    server = Server(args, tls=False)
    sbx = None
    results = {}
    try:
        sbx = Sandbox.create(timeout=1800, api_key=key, api_url=server.url, sandbox_url=server.url)
        args.sandbox = sbx.sandbox_id
        sbx.commands.run("mkdir -p /tmp/www && cd /tmp/www && head -c 64M /dev/urandom > big && echo ok > small")
        sbx.commands.run("cd /tmp/www && python3 -m http.server 8080", background=True)
        time.sleep(1)
        results["http"] = measure(args, "http")
        server.stop()
        server = Server(args, tls=True)
        results["https"] = measure(args, "https")
    finally:
        if sbx is not None:
            try:
                Sandbox.kill(sbx.sandbox_id, api_key=key, api_url=f"http://127.0.0.1:{args.port}")
            except Exception:
                # The TLS server is up: kill through it.
                import ssl
                req = urllib.request.Request(f"{server.url}/sandboxes/{sbx.sandbox_id}", method="DELETE",
                                             headers={"X-API-Key": key})
                ctx = ssl.create_default_context(cafile=f"{args.data}/tls/ca.pem")
                urllib.request.urlopen(req, context=ctx, timeout=60).read()
        server.stop()
    build = "release" if "/release/" in args.soulbox else "debug"
    print(f"soulbox server ({build} build), curl {sh('curl', '--version').split()[1]}, same sandbox and port:")
    print(f"{'':40} {'HTTP':>10} {'HTTPS':>10} {'HTTPS/HTTP':>11}")
    for k in results["http"]:
        a, b = results["http"][k], results["https"][k]
        print(f"{k:40} {a:10.2f} {b:10.2f} {b / a:11.2f}")


if __name__ == "__main__":
    main()
