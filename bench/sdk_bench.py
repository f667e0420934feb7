"""Python-SDK side of bench/envd.sh: command round trip and file transfer through the official `e2b` SDK.

Runs in debug mode (E2B_DEBUG=true) against envd on localhost:49983, with the access token handed to the SDK the
same way tests/compat/conftest.py does. Prints `key=value` lines for envd.sh to tabulate.

  python sdk_bench.py roundtrip N WARMUP
  python sdk_bench.py download REMOTE_PATH LOCAL_DEST
  python sdk_bench.py upload LOCAL_SRC REMOTE_PATH
"""

import os
import sys
import time

from packaging.version import Version

from e2b import ConnectionConfig, Sandbox


def sandbox() -> Sandbox:
    token = os.environ["SOULBOX_ENVD_TOKEN"]
    created = Sandbox.create()
    headers = {
        "E2b-Sandbox-Id": created.sandbox_id,
        "E2b-Sandbox-Port": str(ConnectionConfig.envd_port),
        "X-Access-Token": token,
    }
    return Sandbox(
        sandbox_id=created.sandbox_id,
        sandbox_domain=None,
        envd_version=Version("99.99.99"),
        envd_access_token=token,
        connection_config=ConnectionConfig(extra_sandbox_headers=headers),
    )


def pct(samples, p):
    s = sorted(samples)
    k = max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))
    return s[k]


def roundtrip(n: int, warmup: int):
    sbx = sandbox()
    samples = []
    for i in range(warmup + n):
        t = time.perf_counter()
        r = sbx.commands.run("true")
        dt = time.perf_counter() - t
        assert r.exit_code == 0
        if i >= warmup:
            samples.append(dt)
    ms = lambda s: f"{s * 1e3:.3f}"  # noqa: E731
    print(
        f"sdk_run_true n={n} p50_ms={ms(pct(samples, 50))} p99_ms={ms(pct(samples, 99))} "
        f"mean_ms={ms(sum(samples) / n)} min_ms={ms(min(samples))}"
    )


def download(remote: str, local: str):
    sbx = sandbox()
    t = time.perf_counter()
    size = 0
    with open(local, "wb") as f:
        for chunk in sbx.files.read(remote, format="stream", request_timeout=600):
            f.write(chunk)
            size += len(chunk)
    dt = time.perf_counter() - t
    print(f"sdk_download bytes={size} seconds={dt:.3f}")


def upload(local: str, remote: str):
    sbx = sandbox()
    size = os.path.getsize(local)
    t = time.perf_counter()
    with open(local, "rb") as f:
        sbx.files.write(remote, f, request_timeout=600)
    dt = time.perf_counter() - t
    print(f"sdk_upload bytes={size} seconds={dt:.3f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "roundtrip":
        roundtrip(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "download":
        download(sys.argv[2], sys.argv[3])
    elif cmd == "upload":
        upload(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
