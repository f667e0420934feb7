"""The booted pool (issue 18 goal 1) attacked: a pooled sandbox's envd holds a secret of the pool's until a create
claims it (`POST /soulbox/claim`), which swaps in the sandbox's own secret and configuration.

- The pool's secret of a claimed sandbox opens nothing on its envd any more (every route, the claim route too),
  even for a local user on the host who read it from the node's record.
- `POST /soulbox/claim` from a client: the proxy refuses it however it is spelled (403, like `/init`), so a
  stranger who knows the id of a sandbox without an access token cannot reach it with the node's secret added;
  envd itself answers it 404 on a claimed sandbox and on a cold one, even straight to the sandbox's address with
  its real secret — either layer alone would have stopped that stranger handing it a secret and token of their
  own.
- Code inside a claimed sandbox finds no pool secret (environments, command lines, files) and cannot reach the
  envd of a sibling still in the pool, not even knowing that sibling's secret.
- Pooled sandboxes are nobody's: no API call or proxied request names one.
- Nothing of one user's sandbox (environment, metadata, files, processes) is in the next user's pooled sandbox.

A server of this module's own runs with `--booted-pool base=2` (ownserver.py; the suite's spare prefix and pool).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import uuid

import httpx
import pytest
from e2b import Sandbox

from conftest import ENVD_PORT, RUN_ID, root_run, wait_until
from ownserver import REFUSED_HEADER, SECRET_HEADER, direct, module_server, new_key, sandbox_record, sdk_opts

pytestmark = pytest.mark.timeout(300)

CLAIM = "/soulbox/claim"
ATTACKER_SECRET = "attacker-secret-" + "0" * 48
ATTACKER_TOKEN = "attacker-token-0123456789"
CLAIM_BODY = {
    "envdSecret": ATTACKER_SECRET,
    "accessToken": ATTACKER_TOKEN,
    "sandboxId": "attacker",
    "envVars": {"PWNED": "1"},
    "defaultUser": "root",
}
NOT_FOUND = "The sandbox was not found"


@pytest.fixture(scope="module")
def server():
    yield from module_server("hg-pool", "--booted-pool", "base=2")


def pooled(server) -> dict[str, dict]:
    """id -> node record (secret, ip) of every pooled sandbox whose boot has finished: a record is on disk from the
    start of a boot, a create takes only what the runtime has logged as booted (tests/e2e/test_booted_pool.py)."""
    log = server.log()
    out = {}
    root = os.path.join(server.data_dir, "node", "sandboxes")
    for sid in os.listdir(root):
        try:
            rec = sandbox_record(server, sid)
        except (OSError, ValueError, KeyError):
            continue
        if rec.get("status") == "pooled" and re.search(rf"booted a sandbox for the pool .*sandbox={sid}\b", log):
            out[sid] = rec
    return out


def wait_pool(server, n: int) -> dict[str, dict]:
    wait_until(lambda: len(pooled(server)) >= n, 90, f"{n} booted sandboxes in the pool")
    return pooled(server)


def from_pool(server, sandbox_id: str) -> bool:
    return re.search(rf"claimed from the booted pool sandbox={sandbox_id}\b", server.log()) is not None


def create(server, tag: str, key: str | None = None, metadata: dict | None = None, **kwargs) -> Sandbox:
    kwargs.setdefault("envs", {"WHO": tag})
    metadata = {"sec-run": RUN_ID, "owner": tag, **(metadata or {})}
    return Sandbox.create(timeout=300, metadata=metadata, **sdk_opts(server, key), **kwargs)


def proxy(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, trust_env=False)


def process_start(cmd: str, *args: str) -> bytes:
    """A Connect `Process/Start` request body (one envelope)."""
    import json

    msg = json.dumps({"process": {"cmd": cmd, "args": list(args)}}).encode()
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def assert_secret_refused(r: httpx.Response, what: str):
    assert r.status_code == 403 and r.headers.get(REFUSED_HEADER) == "secret", f"{what}: {r.status_code} {r.text}"


def test_the_pools_secret_opens_nothing_once_claimed(server):
    ready = wait_pool(server, 1)
    a = create(server, "a")
    try:
        assert from_pool(server, a.sandbox_id) and a.sandbox_id in ready, "a came from the pool"
        ip, pool_secret = ready[a.sandbox_id]["ip"], ready[a.sandbox_id]["envdSecret"]
        base = f"http://{ip}:{ENVD_PORT}"
        attacks = [
            ("GET", "/health", {}),
            ("GET", "/envs", {}),
            ("GET", "/files", {"params": {"path": "/etc/hostname"}}),
            ("POST", "/files", {"params": {"path": "/tmp/pwned"}, "content": b"x"}),
            ("POST", "/process.Process/Start",
             {"content": process_start("/bin/touch", "/tmp/pwned"),
              "headers": {"Content-Type": "application/connect+json"}}),
            # Taking the sandbox back: a claim of the attacker's.
            ("POST", CLAIM, {"json": CLAIM_BODY}),
        ]
        with direct() as c:
            for method, path, kw in attacks:
                kw = {**kw, "headers": {**kw.get("headers", {}), SECRET_HEADER: pool_secret}}
                assert_secret_refused(c.request(method, base + path, **kw), f"{method} {path} with the pool's secret")
            assert_secret_refused(c.get(base + "/health", headers={SECRET_HEADER: ATTACKER_SECRET}), "attacker's")
            # The real secret (the node's record) works: the refusals above were about the secret alone.
            real = sandbox_record(server, a.sandbox_id)["envdSecret"]
            assert real != pool_secret
            assert c.get(base + "/health", headers={SECRET_HEADER: real}).status_code == 200
        out = a.commands.run("echo $WHO ${PWNED:-clean}; test -e /tmp/pwned && echo pwned || echo untouched")
        assert out.stdout.split() == ["a", "clean", "untouched"], out.stdout
    finally:
        a.kill()


def claimed_and_cold(server) -> tuple[list[str], list[str]]:
    """Sandboxes without an access token (v1 create): some handed out by the pool, at least one cold. Creates run
    three at once (the pool holds at most two); a refill that won the race means another round."""
    made: list[str] = []
    with proxy(server) as api:
        api.headers["X-API-Key"] = server.key
        for _ in range(4):
            body = {"templateID": "base", "timeout": 300, "metadata": {"sec-run": RUN_ID}}
            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                answers = list(ex.map(lambda _: api.post("/sandboxes", json=body), range(3)))
            for r in answers:
                assert r.status_code == 201, r.text
                assert not r.json().get("envdAccessToken"), r.text
                made.append(r.json()["sandboxID"])
            claimed = [s for s in made if from_pool(server, s)]
            cold = [s for s in made if s not in claimed]
            if claimed and cold:
                return claimed, cold
    pytest.fail(f"no mix of pooled and cold sandboxes in {made}")


def test_claim_route_is_404_on_a_claimed_or_cold_sandbox(server):
    claimed, cold = claimed_and_cold(server)
    try:
        for sid in claimed[:1] + cold[:1]:
            kind = "claimed" if sid in claimed else "cold"
            route = {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(ENVD_PORT)}
            with proxy(server) as c:
                # A stranger (no key; the sandbox has no access token), for whom the proxy would add the node's
                # secret: the proxy refuses the node's own route, however it is spelled.
                for path in (CLAIM, CLAIM + "/", "//soulbox/claim", "/SoulBox/%63laim"):
                    r = c.post(httpx.URL(server.url + path), headers=route, json=CLAIM_BODY)
                    assert r.status_code == 403 and "reserved" in r.json()["message"], (
                        f"{kind} {sid}: proxied POST {path}: {r.status_code} {r.text}"
                    )
            rec = sandbox_record(server, sid)
            base = f"http://{rec['ip']}:{ENVD_PORT}"
            with direct() as c:
                assert_secret_refused(c.post(base + CLAIM, json=CLAIM_BODY), f"{kind}: a claim without a secret")
                r = c.post(base + CLAIM, json=CLAIM_BODY, headers={SECRET_HEADER: rec["envdSecret"]})
                assert r.status_code == 404, f"{kind} {sid}: a claim with its own secret: {r.status_code} {r.text}"
                # Nothing was swapped: the node's secret still opens it, the attacker's does not.
                assert c.get(base + "/health", headers={SECRET_HEADER: rec["envdSecret"]}).status_code == 200
                assert_secret_refused(c.get(base + "/health", headers={SECRET_HEADER: ATTACKER_SECRET}), "attacker's")
            sbx = Sandbox.connect(sid, **sdk_opts(server))
            assert sbx.commands.run("echo ${PWNED:-clean}; hostname").stdout.split() == ["clean", sid]
    finally:
        with proxy(server) as api:
            for sid in claimed + cold:
                api.delete(f"/sandboxes/{sid}", headers={"X-API-Key": server.key})


def test_code_in_a_claimed_sandbox_finds_no_pool_secret_and_reaches_no_sibling(server):
    before = wait_pool(server, 2)
    a = create(server, "a")
    try:
        assert from_pool(server, a.sandbox_id) and a.sandbox_id in before
        secrets = [r["envdSecret"] for r in before.values()]
        siblings = {sid: r for sid, r in pooled(server).items() if sid != a.sandbox_id}
        assert siblings, "a sibling stays in the pool"
        # Needles written from halves, so that no command line holds a whole secret (it would find itself).
        halves = " ".join(f"{s[: len(s) // 2]} {s[len(s) // 2:]}" for s in secrets)
        script = (
            f"set -- {halves}; : > /dev/shm/needles; "
            'while [ $# -gt 1 ]; do printf "%s%s\\n" "$1" "$2" >> /dev/shm/needles; shift 2; done; '
            "{ for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat $f 2>/dev/null; echo; done; env; } "
            "| tr '\\0' '\\n' | grep -c -F -f /dev/shm/needles; "
            "grep -rlsF -f /dev/shm/needles /etc /home /root /tmp /run /var /srv /opt /.soulbox 2>/dev/null | head -3; "
            "rm -f /dev/shm/needles; true"
        )
        for user in ("root", "user"):
            r = root_run(a, script) if user == "root" else a.commands.run(script)
            assert r.stdout.split() == ["0"], f"as {user}, a pool secret was found: {r.stdout} {r.stderr}"
        # Even knowing a sibling's secret, code inside reaches no pooled sibling's envd (sandbox to sandbox is
        # dropped): not the claim route, not anything.
        for sid, rec in siblings.items():
            ip, secret = rec["ip"], rec["envdSecret"]
            request = f"GET /health HTTP/1.0\\r\\n{SECRET_HEADER}: {secret}\\r\\n\\r\\n"
            probe = (
                f"timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{ENVD_PORT} && printf \"{request}\" >&3 && cat <&3' "
                "2>&1; echo exit=$?"
            )
            out = root_run(a, probe).stdout
            assert "HTTP/1" not in out and "exit=0" not in out, f"a reached pooled {sid}: {out}"
        # The probes were refused by the network, not by dead siblings: each still answers the node.
        with direct() as c:
            for sid, rec in siblings.items():
                if sid in pooled(server):
                    r = c.get(f"http://{rec['ip']}:{ENVD_PORT}/health", headers={SECRET_HEADER: rec["envdSecret"]})
                    assert r.status_code == 200, f"pooled {sid}: {r.status_code} {r.text}"
    finally:
        a.kill()


def test_pooled_sandboxes_are_nobodys(server):
    ready = wait_pool(server, 2)
    with proxy(server) as c:
        c.headers["X-API-Key"] = server.key
        listed = {s["sandboxID"] for s in c.get("/v2/sandboxes", params={"state": "running,paused"}).json()}
        assert not listed & set(ready), "pooled sandboxes are listed"
        for sid in ready:
            for method, path in (("GET", f"/sandboxes/{sid}"), ("POST", f"/sandboxes/{sid}/connect"),
                                 ("POST", f"/sandboxes/{sid}/resume"), ("POST", f"/sandboxes/{sid}/pause"),
                                 ("POST", f"/sandboxes/{sid}/timeout"), ("DELETE", f"/sandboxes/{sid}")):
                body = {} if path.endswith("/pause") else {"timeout": 60} if method == "POST" else None
                r = c.request(method, path, json=body)
                assert r.status_code == 404, f"{method} {path} on a pooled sandbox: {r.status_code} {r.text}"
            # Through the proxy, envd's port and any other, the claim route too: no such sandbox.
            for port, path in ((ENVD_PORT, "/health"), (ENVD_PORT, CLAIM), (8080, "/")):
                r = c.post(path, headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(port)}, json=CLAIM_BODY)
                want = {"sandboxId": sid, "message": NOT_FOUND, "code": 502}
                assert r.status_code == 502 and r.json() == want, f"port {port} {path}: {r.status_code} {r.text}"
    # Untouched by all that: still pooled, still the pool's secret.
    now = pooled(server)
    for sid, rec in ready.items():
        assert sid in now and now[sid]["envdSecret"] == rec["envdSecret"], f"pooled {sid} was changed"


def test_nothing_of_one_users_sandbox_is_in_the_next_pooled_one(server):
    mark = uuid.uuid4().hex
    key_b = new_key(server, "hg-b", "hg-team-b")
    wait_pool(server, 2)
    a = create(server, "a", envs={"A_SECRET": mark}, metadata={"a-mark": mark})
    b = None
    try:
        assert from_pool(server, a.sandbox_id)
        a.files.write("/tmp/a-mark", mark)
        a.files.write("/home/user/a-mark", mark)
        root_run(a, f"echo {mark} > /dev/shm/a-mark; echo {mark} > /var/tmp/a-mark")
        a.commands.run("sleep 7777", background=True)
        # One pooled sandbox was a sibling all along, the other boots after a's claim; b takes the first.
        wait_pool(server, 1)
        b = create(server, "b", key=key_b)
        assert from_pool(server, b.sandbox_id) and b.sandbox_id != a.sandbox_id
        a.kill()
        files = "/tmp/a-mark /home/user/a-mark /dev/shm/a-mark /var/tmp/a-mark"
        look = f"env; ps -eo args; hostname; cat {files} 2>&1; true"
        for run in (lambda c: b.commands.run(c), lambda c: root_run(b, c)):
            out = run(look).stdout
            assert mark not in out and "7777" not in out and "A_SECRET" not in out, out
            assert b.sandbox_id in out and "WHO=b" in out
        info = Sandbox.get_info(b.sandbox_id, **sdk_opts(server, key_b))
        assert info.metadata.get("owner") == "b" and "a-mark" not in info.metadata, info.metadata
        # A later one too, after a is gone.
        wait_pool(server, 1)
        c = create(server, "c", key=key_b)
        try:
            assert from_pool(server, c.sandbox_id)
            out = root_run(c, look).stdout
            assert mark not in out and "7777" not in out, out
        finally:
            c.kill()
    finally:
        for sbx in (a, b):
            if sbx is not None:
                try:
                    sbx.kill()
                except Exception:  # noqa: BLE001 (already gone)
                    pass
