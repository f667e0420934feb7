"""The `base` template has E2B's base tools (issue 15, item 3): agent code run through the official SDK as `user`
finds `python` (3.11) and `pip`, `node`, `npm`, `yarn`, a C compiler, `gh`, `git`, `curl` and passwordless
`sudo`, in a sandbox created without a template. Nothing here needs the network: `pip install` installs a wheel
the test writes inside the sandbox."""

from __future__ import annotations

import pytest

from conftest import Sandboxes

pytestmark = pytest.mark.timeout(300)

# A minimal wheel (PEP 427) written with the standard library: a module, its METADATA, WHEEL and RECORD.
MAKE_WHEEL = r"""
import zipfile
files = {
    "sbx_local_pkg.py": "ANSWER = 42\n",
    "sbx_local_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: sbx-local-pkg\nVersion: 1.0\n",
    "sbx_local_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
with zipfile.ZipFile("/tmp/wheels/sbx_local_pkg-1.0-py3-none-any.whl", "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr("sbx_local_pkg-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in files) + "sbx_local_pkg-1.0.dist-info/RECORD,,\n")
"""

C_PROGRAM = '#include <stdio.h>\nint main(void) { printf("compiled %d\\n", 6 * 7); return 0; }\n'


def run(sbx, cmd: str) -> str:
    r = sbx.commands.run(cmd, timeout=120)
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    return r.stdout.strip()


def test_agent_code_finds_e2b_base_tools_as_user(sandboxes: Sandboxes):
    sbx = sandboxes.create()
    assert run(sbx, "whoami; pwd").split() == ["user", "/home/user"]
    assert run(sbx, "python --version").startswith("Python 3.11."), "python is Python 3.11"
    assert run(sbx, "python -c 'import sys; print(sys.version_info[:2])'") == "(3, 11)"
    assert run(sbx, "pip --version").startswith("pip ")

    # pip install as user, from a local wheel (no index): lands in the system's site (/usr/local), importable.
    sbx.files.write("/tmp/make_wheel.py", MAKE_WHEEL)
    run(sbx, "mkdir -p /tmp/wheels && python /tmp/make_wheel.py")
    out = sbx.commands.run("pip install --no-index --find-links /tmp/wheels sbx-local-pkg", timeout=120)
    assert out.exit_code == 0 and "Successfully installed sbx-local-pkg-1.0" in out.stdout, (out.stdout, out.stderr)
    assert run(sbx, "cd / && python -c 'import sbx_local_pkg; print(sbx_local_pkg.ANSWER, sbx_local_pkg.__file__)'") == (
        "42 /usr/local/lib/python3.11/dist-packages/sbx_local_pkg.py"
    )

    assert run(sbx, "node -e 'console.log(process.version.split(\".\")[0], 6 * 7)'") == "v18 42"
    assert run(sbx, "npm --version").split(".")[0].isdigit()
    assert run(sbx, "yarn --version").startswith("1.")
    # npm and yarn work on a local project (no registry: no dependencies).
    sbx.files.write("/home/user/proj/package.json", '{"name":"proj","version":"1.0.0","scripts":{"hi":"echo hi-from-npm"}}')
    assert "hi-from-npm" in run(sbx, "cd /home/user/proj && npm run hi")
    assert "hi-from-npm" in run(sbx, "cd /home/user/proj && yarn run hi")

    sbx.files.write("/home/user/hello.c", C_PROGRAM)
    assert run(sbx, "gcc -O2 -o /home/user/hello /home/user/hello.c && /home/user/hello") == "compiled 42"
    assert run(sbx, "make --version").startswith("GNU Make")
    assert run(sbx, "g++ --version").startswith("g++")

    assert run(sbx, "gh --version").startswith("gh version")
    assert run(sbx, "git --version").startswith("git version")
    assert run(sbx, "curl --version").startswith("curl ")
    # gVisor refuses sudo's setuid climb here ("no new privileges" — seen on Debian 12's runsc, not yet
    # investigated: README, "Choosing a runtime"); on runc `user` gets root as on E2B.
    if "gVisor" not in sbx.commands.run("dmesg 2>&1 | head -3", user="root").stdout:
        assert run(sbx, "sudo -n true && sudo -n whoami") == "root"
    # the tools sit where E2B users look for them: on the default PATH
    for tool in ["python", "pip", "node", "npm", "yarn", "gcc", "make", "gh", "git", "curl", "sudo"]:
        assert run(sbx, f"command -v {tool}").startswith("/usr/"), tool
