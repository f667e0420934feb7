"""The server holds under abuse, and host files stay out of templates (issue 11, items 4 and 6).

With an ordinary API key (and with no key at all, over raw sockets): host-path template bases outside the
configured directory, symlink and `..` escapes out of it; 1,100 idle connections; a slowloris client; oversized
bodies on the JSON API, the sandbox proxy and template uploads; a RUN step that prints far more than a log should
keep; a COPY upload whose content is not what its `filesHash` says. Server settings: server.toml beside this file.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import socket
import tarfile
import time
import urllib.parse
import uuid
from typing import Dict, List, Tuple

import httpx
import pytest

from conftest import API_URL, DATA_DIR, RUN_ID

pytestmark = pytest.mark.timeout(600)

HOST_SOURCES = os.path.join(DATA_DIR, "abuse-host-sources")  # [templates] host_source_dirs in server.toml
OUTSIDE = os.path.join(DATA_DIR, "abuse-host-secret")
HEADER_TIMEOUT_S = 5  # [http] header_read_timeout_s in server.toml
MAX_UPLOAD = 16 << 20  # [http] max_upload_mb in server.toml
API = urllib.parse.urlparse(API_URL)


def _tar_with(files: Dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def names(api):
    made: List[str] = []

    def make(kind: str) -> str:
        n = f"sec-abuse-{kind}-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        made.append(n)
        return n

    yield make
    for n in made:
        api.delete(f"/templates/{n}")


@pytest.fixture
def host_dirs():
    """The listed directory with a good tarball and escapes out of it; a secret outside it."""
    for d in (HOST_SOURCES, OUTSIDE):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    secret_tar = os.path.join(OUTSIDE, "secret.tar")
    with open(secret_tar, "wb") as f:
        f.write(_tar_with({"secret.txt": b"host secret\n"}))
    os.makedirs(os.path.join(OUTSIDE, "layout"))
    with open(os.path.join(HOST_SOURCES, "ok.tar"), "wb") as f:
        f.write(_tar_with({"marker.txt": b"from the listed dir\n"}))
    os.symlink(secret_tar, os.path.join(HOST_SOURCES, "abs-link.tar"))
    os.symlink("../abuse-host-secret/secret.tar", os.path.join(HOST_SOURCES, "rel-link.tar"))
    os.symlink(os.path.join(OUTSIDE, "layout"), os.path.join(HOST_SOURCES, "layout-link"))
    yield {"secret_tar": secret_tar}
    for d in (HOST_SOURCES, OUTSIDE):
        shutil.rmtree(d, ignore_errors=True)


def request_build(api, name: str) -> Tuple[str, str]:
    r = api.post("/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512})
    assert r.status_code == 202, r.text
    return r.json()["templateID"], r.json()["buildID"]


def start_build(api, tid: str, bid: str, recipe: dict) -> httpx.Response:
    return api.post(f"/v2/templates/{tid}/builds/{bid}", json=recipe)


def build_log(api, tid: str, bid: str) -> Tuple[List[dict], dict]:
    """The whole NDJSON stream of a build (it ends with the build): its entries and the final status line."""
    lines: List[dict] = []
    with api.stream("GET", f"/templates/{tid}/builds/{bid}/logs/stream", timeout=600) as r:
        assert r.status_code == 200
        for raw in r.iter_lines():
            if raw.strip():
                lines.append(json.loads(raw))
    assert lines and "status" in lines[-1], lines[-3:]
    return lines[:-1], lines[-1]


def assert_not_registered(api, name: str):
    assert api.get(f"/templates/aliases/{name}").status_code == 404
    listed = [t["templateID"] for t in api.get("/templates").json()]
    assert name not in listed, listed


def test_host_paths_outside_the_listed_dir_and_escapes_are_refused(api, names, host_dirs):
    for from_image in [
        "rootfs:/etc/passwd",
        f"rootfs:{host_dirs['secret_tar']}",
        "oci-archive:/",
        f"oci-archive:{OUTSIDE}/layout",
        f"rootfs:{HOST_SOURCES}/../abuse-host-secret/secret.tar",
        f"rootfs:{HOST_SOURCES}/abs-link.tar",
        f"rootfs:{HOST_SOURCES}/rel-link.tar",
        f"oci-archive:{HOST_SOURCES}/layout-link",
    ]:
        name = names("hostpath")
        tid, bid = request_build(api, name)
        r = start_build(api, tid, bid, {"fromImage": from_image, "steps": []})
        assert r.status_code == 400, f"{from_image}: {r.status_code} {r.text}"
        body = r.json()
        assert body["code"] == 400 and "host_source_dirs" in body["message"], body
        status = api.get(f"/templates/{tid}/builds/{bid}/status").json()["status"]
        assert status == "waiting", f"{from_image}: the build must not have started ({status})"
        assert_not_registered(api, name)


def test_a_host_path_inside_the_listed_dir_builds(api, names, host_dirs):
    name = names("hostok")
    tid, bid = request_build(api, name)
    r = start_build(api, tid, bid, {"fromImage": f"rootfs:{HOST_SOURCES}/ok.tar", "steps": []})
    assert r.status_code == 202, r.text
    entries, end = build_log(api, tid, bid)
    assert end["status"] == "ready", (end, [e["message"] for e in entries][-10:])
    assert name in [t["templateID"] for t in api.get("/templates").json()]


def test_1100_idle_connections_then_health_answers_within_a_second():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    idle: List[socket.socket] = []
    try:
        for _ in range(1100):
            idle.append(socket.create_connection((API.hostname, API.port), timeout=30))
        started = time.monotonic()
        r = httpx.get(f"{API_URL}/health", timeout=30, trust_env=False)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert took < 1.0, f"/health took {took:.2f} s with 1,100 idle connections open"
        # They were open (not shed) while /health answered: no EOF on any of them yet.
        for s in idle:
            s.setblocking(False)
            try:
                data = s.recv(1)
                pytest.fail(f"an idle connection was already closed or answered: {data!r}")
            except BlockingIOError:
                pass
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _read_until_closed(s: socket.socket, bound_s: float) -> Tuple[bool, bytes]:
    s.settimeout(bound_s)
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except (socket.timeout, TimeoutError):
        return False, got
    except ConnectionResetError:
        return True, got


def test_slowloris_is_dropped_after_the_header_timeout(anon):
    slow = socket.create_connection((API.hostname, API.port), timeout=30)
    silent = socket.create_connection((API.hostname, API.port), timeout=30)
    try:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Trickle: 1\r\n")  # the head never ends
        started = time.monotonic()
        for name, s in (("slowloris", slow), ("silent", silent)):
            closed, got = _read_until_closed(s, HEADER_TIMEOUT_S * 6)
            assert closed, f"the {name} connection is still open after {time.monotonic() - started:.1f} s"
            assert b"200 OK" not in got, got
        # Meanwhile, and afterwards, the server serves normally.
        assert anon.get("/health").status_code == 200
    finally:
        slow.close()
        silent.close()


def _raw(request: bytes, bound_s: float = 30) -> bytes:
    s = socket.create_connection((API.hostname, API.port), timeout=bound_s)
    try:
        s.sendall(request)
        _, got = _read_until_closed(s, bound_s)
        return got
    finally:
        s.close()


def _json_error(raw: bytes, status: int) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), raw[:300]
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    parsed = json.loads(body)
    assert parsed["code"] == status and parsed["message"], parsed
    return parsed


def test_oversized_bodies_are_413_in_e2b_shape(api, victim, names):
    two_mib = b'{"templateID": "' + b"x" * (2 << 20) + b'"}'
    r = api.post("/v2/sandboxes", content=two_mib, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == 413, r.text

    def chunks():
        for _ in range(4):
            yield b" " * (1 << 20)

    r = api.post("/v2/sandboxes", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == 413, r.text

    # Through the proxy: a declared 20 GiB body is refused before a byte of it is sent.
    proxied = _raw(
        f"POST /files?path=/tmp/big HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {victim.sandbox_id}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {20 << 30}\r\nConnection: close\r\n\r\n".encode()
    )
    assert "over the limit" in _json_error(proxied, 413)["message"]

    # Template uploads: a declared and a streamed body over [http] max_upload_mb; nothing is kept.
    tid, _ = request_build(api, names("upload"))
    files_hash = "ab" * 32
    link = api.get(f"/templates/{tid}/files/{files_hash}").json()
    url = urllib.parse.urlparse(link["url"])
    target = f"{url.path}?{url.query}"
    declared = _raw(
        f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_UPLOAD + 1}\r\nConnection: close\r\n\r\n".encode()
    )
    _json_error(declared, 413)

    def upload_chunks():
        for _ in range(MAX_UPLOAD // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    r = httpx.put(link["url"], content=upload_chunks(), timeout=120, trust_env=False)
    assert r.status_code == 413 and r.json()["code"] == 413, r.text
    assert api.get(f"/templates/{tid}/files/{files_hash}").json()["present"] is False


def test_a_huge_run_output_is_capped_and_the_build_still_finishes(api, names):
    name = names("bigrun")
    tid, bid = request_build(api, name)
    noisy = "seq 1 300000; head -c 100000 /dev/zero | tr '\\0' x; echo; echo done-marker"
    r = start_build(api, tid, bid, {"fromTemplate": "base", "steps": [{"type": "RUN", "args": [noisy, "root"], "force": True}]})
    assert r.status_code == 202, r.text
    entries, end = build_log(api, tid, bid)
    messages = [e["message"] for e in entries]
    assert end["status"] == "ready", (end, messages[-10:])
    assert len(messages) < 10_200, f"{len(messages)} log lines stored"
    assert any(m.startswith("[log truncated: a build stores at most") for m in messages)
    assert any(m.startswith("[log truncated:") and "were not stored" in m for m in messages)
    assert "done-marker" in messages and any(m.startswith("Build finished") for m in messages), messages[-20:]
    assert max(len(m.encode()) for m in messages) < 8192 + 100, "lines are cut"
    assert any("line truncated" in m for m in messages)
    # The status endpoint pages the same bounded log.
    status = api.get(f"/templates/{tid}/builds/{bid}/status", params={"logsOffset": 10_000, "limit": 100}).json()
    assert status["status"] == "ready" and len(status["logEntries"]) < 200


def _context(root, text: str) -> str:
    os.makedirs(os.path.join(root, "app"), exist_ok=True)
    with open(os.path.join(root, "app", "hello.txt"), "w") as f:
        f.write(text)
    return str(root)


def test_an_upload_that_does_not_match_its_hash_is_refused(api, names, tmp_path):
    from e2b.template.utils import calculate_files_hash, tar_file_stream

    genuine = _context(tmp_path / "genuine", "hello from the genuine context\n")
    forged = _context(tmp_path / "forged", "something else entirely\n")
    files_hash = calculate_files_hash("app", "/home/user/app", genuine, [], False, None)
    copy = {"type": "COPY", "args": ["app", "/home/user/app", "", ""], "filesHash": files_hash, "force": True}
    recipe = {"fromTemplate": "base", "steps": [copy, {"type": "RUN", "args": ["cat /home/user/app/hello.txt", "root"]}]}
    tid, bid = request_build(api, names("hash"))

    def upload_url() -> str:
        link = api.get(f"/templates/{tid}/files/{files_hash}").json()
        return link.get("url") or pytest.fail(f"no upload URL: {link}")

    def put(url: str, context: str) -> httpx.Response:
        with tar_file_stream("app", context, [], False, True) as archive:
            return httpx.put(url, content=archive.read(), timeout=60, trust_env=False)

    # Other files under the genuine hash: stored (the hash needs the step's src/dest), refused at build start.
    assert put(upload_url(), forged).status_code == 200
    r = start_build(api, tid, bid, recipe)
    assert r.status_code == 400 and "do not match filesHash" in r.json()["message"], r.text
    assert api.get(f"/templates/{tid}/files/{files_hash}").json()["present"] is False, "the forged upload is gone"

    # The genuine files are kept; forged files sent again to the same URL afterwards do not replace them.
    url = upload_url()
    assert put(url, genuine).status_code == 200
    assert api.get(f"/templates/{tid}/files/{files_hash}").json()["present"] is True
    assert put(url, forged).status_code == 200, "accepted and discarded: the first complete upload stays"
    r = start_build(api, tid, bid, recipe)
    assert r.status_code == 202, r.text
    entries, end = build_log(api, tid, bid)
    assert end["status"] == "ready", (end, [e["message"] for e in entries][-10:])
    assert "hello from the genuine context" in [e["message"] for e in entries]
