"""`base`'s login shell sets up exactly what Debian's does (issue 18 goal 2).

Every `commands.run` of the SDKs is `bash -l -c <cmd>`, so the login shell's start-up is paid per command. base's
/etc/profile reads the uid from bash's own `$EUID` instead of forking `id -u` (other shells still ask `id`). This
test proves the change is invisible: the environment a login shell ends with — exported variables, shell
variables, functions, umask, shell options — for `user` (the default) and for `root`, through `bash -l` and
through `sh -l` (dash reads /etc/profile too), equals the one recorded from the unchanged recipe in
`login_env.json`. Values that differ per sandbox or per call are compared by presence only.

Re-record (only ever from a base built by the unchanged recipe): SOULBOX_E2E_RECORD_LOGIN_ENV=1 in the
environment of pytest writes login_env.json instead of comparing.
"""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from conftest import Sandboxes

pytestmark = pytest.mark.timeout(300)

EXPECTED = os.path.join(os.path.dirname(__file__), "login_env.json")
RECORD = bool(os.environ.get("SOULBOX_E2E_RECORD_LOGIN_ENV"))

# Different in every sandbox or every process: compared by presence, not value.
PER_SANDBOX = {"E2B_SANDBOX_ID", "HOSTNAME"}
# Bash's dynamic variables and the ones describing the running command itself.
DYNAMIC = {
    "BASHPID", "BASH_ARGC", "BASH_ARGV", "BASH_LINENO", "BASH_SOURCE", "BASH_COMMAND", "BASH_SUBSHELL",
    "EPOCHREALTIME", "EPOCHSECONDS", "RANDOM", "SRANDOM", "SECONDS", "LINENO", "PPID", "FUNCNAME", "PIPESTATUS",
    "_", "BASH_EXECUTION_STRING", "BASH_REMATCH", "COMP_WORDBREAKS", "OLDPWD",
}

# Each section base64-encoded on a line of its own (values may hold newlines). `declare -p` and `declare -f`
# run in this very shell (a pipeline would run them in a subshell, whose BASH_SUBSHELL differs).
BASH_PROBE = r"""
b64() { base64 -w0; echo; }
env -0 | b64
__p=$(declare -p); printf '%s' "$__p" | b64
__f=$(declare -f); printf '%s' "$__f" | b64
umask | b64
shopt -p | b64
set +o | b64
"""
SH_PROBE = "env -0 | base64 -w0; echo; umask"


def env_map(raw: bytes) -> dict:
    out = {}
    for item in raw.split(b"\0"):
        if item:
            k, _, v = item.decode().partition("=")
            out[k] = v
    return out


def declared(text: str) -> dict:
    """`declare -p` output → {name: 'declare <flags> name=value'}; the probe's own helpers left out."""
    out = {}
    for line in re.split(r"\n(?=declare )", text):
        m = re.match(r"declare (\S+) ([A-Za-z_][A-Za-z0-9_]*)", line)
        if m and not m.group(2).startswith("__"):
            out[m.group(2)] = line
    return out


def mask(values: dict) -> dict:
    return {k: ("<varies>" if k in PER_SANDBOX else v) for k, v in values.items() if k not in DYNAMIC}


def functions(text: str) -> str:
    """`declare -f` without the probe's own helper."""
    return re.sub(r"(?ms)^b64 \(\) \n\{.*?\n\}\n?", "", text).strip()


def capture(sbx, user: str) -> dict:
    r = sbx.commands.run(BASH_PROBE, user=user, timeout=60)
    assert r.exit_code == 0 and r.stderr == "", (user, r.stdout, r.stderr)
    env, decl, funcs, umask, shopt, setopts = (base64.b64decode(x) for x in r.stdout.strip().split("\n"))
    s = sbx.commands.run(SH_PROBE.replace("'", "'\\''").join(["sh -l -c '", "'"]), user=user, timeout=60)
    # stderr must stay empty: a profile line dash cannot run would print its complaint there.
    assert s.exit_code == 0 and s.stderr == "", (user, s.stdout, s.stderr)
    sh_env, sh_umask = s.stdout.strip().split("\n")
    return {
        "bash_env": mask(env_map(env)),
        "bash_vars": mask(declared(decl.decode())),
        "bash_functions": functions(funcs.decode()),
        "bash_umask": umask.decode().strip(),
        "bash_shopt": shopt.decode().strip(),
        "bash_set": setopts.decode().strip(),
        "sh_env": mask(env_map(base64.b64decode(sh_env))),
        "sh_umask": sh_umask.strip(),
    }


def test_login_shell_environment_is_the_recorded_one(sandboxes: Sandboxes):
    sbx = sandboxes.create()
    got = {user: capture(sbx, user) for user in ("user", "root")}
    if RECORD:
        with open(EXPECTED, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
            f.write("\n")
        pytest.skip(f"recorded {EXPECTED}")
    with open(EXPECTED) as f:
        expected = json.load(f)
    for user in ("user", "root"):
        for part, want in expected[user].items():
            assert got[user][part] == want, (user, part)
    # The things the SDKs' users rely on, spelled out (the recording must not have captured a broken shell).
    assert got["user"]["bash_env"]["HOME"] == "/home/user" and got["user"]["bash_env"]["USER"] == "user"
    assert got["user"]["bash_env"]["PATH"].startswith("/usr/local/bin:")
    assert got["root"]["bash_env"]["PATH"].startswith("/usr/local/sbin:")
    assert got["user"]["bash_umask"] == got["user"]["sh_umask"] == "0022"


def test_profile_does_not_fork_id_for_bash(sandboxes: Sandboxes):
    """The cost the change removes: a bash login shell runs no `id` (an `id` on PATH that logs its calls would
    see one per login shell otherwise); dash still asks it."""
    sbx = sandboxes.create()
    spy = "#!/bin/sh\necho called >> /tmp/id-calls\nexec /usr/bin/id \"$@\"\n"
    sbx.files.write("/tmp/spy/id", spy)
    assert sbx.commands.run("chmod 755 /tmp/spy/id && rm -f /tmp/id-calls").exit_code == 0
    # The uid check runs first in /etc/profile, with the PATH the shell was started with (the profile sets its own
    # PATH right after), so a PATH given to the command puts the spy in front.
    r = sbx.commands.run("true", envs={"PATH": "/tmp/spy:/usr/bin:/bin"})
    assert r.exit_code == 0
    bash_calls = sbx.commands.run("cat /tmp/id-calls 2>/dev/null | wc -l").stdout.strip()
    # (The bash around it set its own PATH: give dash the spy's again.)
    assert sbx.commands.run("env PATH=/tmp/spy:/usr/bin:/bin sh -l -c true").exit_code == 0
    sh_calls = sbx.commands.run("cat /tmp/id-calls 2>/dev/null | wc -l").stdout.strip()
    if RECORD:
        pytest.skip("recording")
    assert bash_calls == "0", "a bash login shell forked id"
    assert sh_calls == "1", "dash's login shell must still ask id for the uid"
