"""Every `Template()` method of the newest official SDK against the build engine (issue 15, item 4), plus the
template fixes: COPY of trees with symlinks (kept as links, or followed with `resolve_symlinks`; never reaching
the host's files), Dockerfile builds as Docker runs them (root until `USER`) with E2B's default user afterwards,
`make_symlink(force=True)` over an existing link, and E2B's message for a RUN as a user that does not exist.

Nothing here needs the network: pip installs a wheel the build writes, npm installs a local folder (offline),
apt installs from a `file:` repository the build makes, git clones a local repository. Every template a test
builds is deleted at teardown; sandboxes are killed by the `sandboxes` fixture."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Callable, List

import pytest

from e2b import CopyItem, Template
from e2b.exceptions import BuildException

from conftest import RUN_ID, Sandboxes

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
SOULBOX = ROOT / "target" / "debug" / "soulbox"

# Tools in the sandboxes must not reach a registry: every check runs with these.
OFFLINE = (
    "export PIP_DISABLE_PIP_VERSION_CHECK=1 npm_config_offline=true npm_config_audit=false "
    "npm_config_fund=false npm_config_update_notifier=false; "
)
OFFLINE_ENVS = {
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "npm_config_offline": "true",
    "npm_config_audit": "false",
    "npm_config_fund": "false",
    "npm_config_update_notifier": "false",
}

MAKE_WHEEL = (
    "mkdir -p /tmp/wheels && python - <<'EOF'\n"
    "import zipfile\n"
    "files = {'sbx_local_pkg.py': 'ANSWER = 42\\n',\n"
    "  'sbx_local_pkg-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: sbx-local-pkg\\nVersion: 1.0\\n',\n"
    "  'sbx_local_pkg-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: hand\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}\n"
    "with zipfile.ZipFile('/tmp/wheels/sbx_local_pkg-1.0-py3-none-any.whl', 'w') as z:\n"
    "    [z.writestr(n, t) for n, t in files.items()]\n"
    "    z.writestr('sbx_local_pkg-1.0.dist-info/RECORD', ''.join(n + ',,\\n' for n in files) + 'sbx_local_pkg-1.0.dist-info/RECORD,,\\n')\n"
    "EOF\n"
    "chmod -R a+rX /tmp/wheels"
)

# A .deb and a `file:` apt repository holding it; the mirror's sources are set aside so apt-get update is local.
MAKE_APT_REPO = """set -e
mkdir -p /opt/repo /tmp/deb/DEBIAN /tmp/deb/usr/share/sbx-hello
printf 'Package: sbx-hello\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@t>\\nDescription: test\\n' > /tmp/deb/DEBIAN/control
echo hello-from-deb > /tmp/deb/usr/share/sbx-hello/hello.txt
dpkg-deb --build /tmp/deb /opt/repo/sbx-hello_1.0_all.deb >/dev/null
cd /opt/repo && dpkg-scanpackages . > Packages 2>/dev/null
mv /etc/apt/sources.list /etc/apt/sources.list.off 2>/dev/null || true
rm -f /etc/apt/sources.list.d/*
echo 'deb [trusted=yes] file:/opt/repo ./' > /etc/apt/sources.list.d/local.list"""


@pytest.fixture
def names(api):
    made: List[str] = []

    def make(kind: str) -> str:
        n = f"e2e-{kind}-{RUN_ID}-{uuid.uuid4().hex[:6]}".replace("+", "-").replace(".", "-")
        made.append(n)
        return n

    yield make
    for n in made:
        api.delete(f"/templates/{n}")


def build(tpl, name: str) -> List[str]:
    logs: List[str] = []
    Template.build(tpl, name, on_build_logs=lambda e: logs.append(e.message))
    return logs


def sh(sbx, cmd: str) -> str:
    r = sbx.commands.run(OFFLINE + cmd, timeout=120)
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    return r.stdout.strip()


def base(ctx=None, skip_cache: bool = False):
    t = Template(file_context_path=str(ctx)) if ctx else Template()
    if skip_cache:
        t = t.skip_cache()
    return t.from_template("base").set_envs(OFFLINE_ENVS)


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.txt").write_text("hello\n")
    return tmp_path


# ---------------------------------------------------------------------------------------------------------------
# One case per builder method: (method, template from the context dir, check command, expected stdout).
CASES: List[tuple] = [
    (
        "copy",
        lambda c: base(c).copy("app/hello.txt", "/opt/h.txt", user="root", mode=0o604),
        "cat /opt/h.txt; find /opt/h.txt -printf '%u %m'",
        "hello\nroot 604",
    ),
    (
        "copy_items",
        lambda c: base(c).copy_items(
            [CopyItem(src="app/hello.txt", dest="/opt/items/"), CopyItem(src="app/", dest="/opt/tree", mode=0o640)]
        ),
        "cat /opt/items/hello.txt; find /opt/tree/hello.txt -printf '%u %m'",
        "hello\nuser 640",
    ),
    (
        "remove",
        lambda c: base(c)
        .run_cmd("mkdir -p /tmp/rm/x /tmp/keep && touch /tmp/rm/x/f /tmp/rm1 /tmp/rm2", user="root")
        .remove("/tmp/rm", recursive=True, force=True, user="root")
        .remove(["/tmp/rm1", "/tmp/rm2"], user="root"),
        # `test`, not `ls`: coreutils' ls fails under Debian 12's gVisor (README, runsc)
        "for p in /tmp/rm /tmp/rm1 /tmp/rm2 /tmp/keep; do test -e $p && echo $p; done; true",
        "/tmp/keep",
    ),
    (
        "rename",
        lambda c: base(c).run_cmd("echo moved > /tmp/old.txt").rename("/tmp/old.txt", "/tmp/new.txt", force=True),
        "cat /tmp/new.txt; test -e /tmp/old.txt || echo old-gone",
        "moved\nold-gone",
    ),
    (
        "make_dir",
        lambda c: base(c).make_dir(["/opt/d1", "/opt/d2/sub"], mode=0o750, user="root").make_dir("/home/user/mine"),
        "find /opt/d1 /opt/d2/sub /home/user/mine -maxdepth 0 -printf '%u %m\\n'",
        "root 750\nroot 750\nuser 755",
    ),
    (
        # force over an existing link to a file replaces it; over a link to a directory, `ln` puts the new link
        # inside that directory (GNU ln, as in E2B), here a link that points at its own directory: the next
        # step must still start (issue 15 saw "Too many levels of symbolic links" there).
        "make_symlink",
        lambda c: base(c)
        .make_symlink("/etc/hostname", "/tmp/f")
        .make_symlink("/etc/os-release", "/tmp/f", force=True)
        .make_symlink("/home/user", "/tmp/d")
        .make_symlink("/home/user", "/tmp/d", force=True)
        .run_cmd("echo next-step-ran > /tmp/next"),
        "readlink /tmp/f /tmp/d /home/user/user; cat /tmp/next",
        "/etc/os-release\n/home/user\n/home/user\nnext-step-ran",
    ),
    (
        # E2B's own SDK test, in the user's home and at the root of the filesystem as root
        "make_symlink_force_e2b",
        lambda c: base(c)
        .make_symlink(".bashrc", ".bashrc.local")
        .skip_cache()
        .make_symlink(".bashrc", ".bashrc.local", force=True)
        .run_cmd('test "$(readlink .bashrc.local)" = ".bashrc"')
        .set_user("root")
        .set_workdir("/")
        .make_symlink(".bashrc", ".bashrc.local")
        .make_symlink(".bashrc", ".bashrc.local", force=True)
        .run_cmd('test "$(readlink .bashrc.local)" = ".bashrc"'),
        "readlink /home/user/.bashrc.local /.bashrc.local",
        ".bashrc\n.bashrc",
    ),
    (
        "run_cmd",
        lambda c: base(c).run_cmd(["echo a > /tmp/run", "echo b >> /tmp/run", "whoami >> /tmp/run"], user="root"),
        "cat /tmp/run",
        "a\nb\nroot",
    ),
    (
        "set_workdir",
        lambda c: base(c).set_workdir("/opt/wd").run_cmd("pwd > marker"),
        "pwd; cat marker; find /opt/wd -maxdepth 0 -printf %u",
        "/opt/wd\n/opt/wd\nuser",
    ),
    (
        "set_user",
        lambda c: base(c).set_user("root").run_cmd("whoami > /tmp/who"),
        "whoami; cat /tmp/who",
        "root\nroot",
    ),
    (
        "set_envs",
        lambda c: base(c).set_envs({"A_VAR": "one", "B_VAR": "two words"}).run_cmd("echo $A_VAR > /tmp/env"),
        'echo "$A_VAR|$B_VAR"; cat /tmp/env',
        "one|two words\none",
    ),
    (
        "pip_install",
        lambda c: base(c)
        .run_cmd(MAKE_WHEEL)
        .pip_install(["--no-index", "--find-links=/tmp/wheels", "sbx-local-pkg"]),
        "cd / && python -c 'import sbx_local_pkg as p; print(p.ANSWER, p.__file__)'",
        "42 /usr/local/lib/python3.11/dist-packages/sbx_local_pkg.py",
    ),
    (
        "pip_install_user",
        lambda c: base(c)
        .run_cmd(MAKE_WHEEL)
        .pip_install(["--no-index", "--find-links=/tmp/wheels", "sbx-local-pkg"], g=False),
        "cd / && python -c 'import sbx_local_pkg as p; print(p.ANSWER, p.__file__)'",
        "42 /home/user/.local/lib/python3.11/site-packages/sbx_local_pkg.py",
    ),
    (
        "npm_install",
        lambda c: base(c)
        .run_cmd(
            "mkdir -p /tmp/sbxhello && cd /tmp/sbxhello && printf '%s' "
            "'{\"name\":\"sbx-hello\",\"version\":\"1.0.0\",\"bin\":{\"sbx-hello\":\"index.js\"}}' > package.json "
            "&& printf '#!/usr/bin/env node\\nconsole.log(\"hi-from-npm\")\\n' > index.js && chmod +x index.js"
        )
        .npm_install("/tmp/sbxhello", g=True)
        .set_workdir("/home/user/proj")
        .run_cmd("printf '%s' '{\"name\":\"proj\",\"version\":\"1.0.0\"}' > package.json")
        .npm_install("/tmp/sbxhello"),
        "sbx-hello; node -e 'console.log(require(\"sbx-hello/package.json\").version)'; grep -c sbx-hello package.json",
        "hi-from-npm\n1.0.0\n1",
    ),
    (
        "apt_install",
        lambda c: base(c).run_cmd(MAKE_APT_REPO, user="root").apt_install("sbx-hello", no_install_recommends=True),
        "cat /usr/share/sbx-hello/hello.txt; dpkg-query -W -f '${Status}' sbx-hello",
        "hello-from-deb\ninstall ok installed",
    ),
    (
        "git_clone",
        lambda c: base(c)
        .run_cmd("git config --system --add safe.directory '*'", user="root")
        .run_cmd(
            "git init -q -b main /tmp/src && cd /tmp/src && for v in v1 v2; do echo $v > f && git add f "
            "&& git -c user.name=t -c user.email=t@t commit -q -m $v; done && git branch other"
        )
        .git_clone("file:///tmp/src", "/home/user/cloned", branch="main", depth=1)
        # a file:// URL: a plain path makes git hardlink objects, refused across overlay layers (see the README)
        .git_clone("file:///tmp/src", "/opt/full", user="root"),
        "cat /home/user/cloned/f; git -C /home/user/cloned rev-list --count HEAD; "
        "git -C /opt/full rev-list --count HEAD; find /opt/full -maxdepth 0 -printf %u",
        "v2\n1\n2\nroot",
    ),
    (
        "set_ready_cmd",
        lambda c: base(c).run_cmd("true").set_ready_cmd("test -e /etc/hostname"),
        "echo created",
        "created",
    ),
]


@pytest.mark.parametrize("method,make,check,expected", CASES, ids=[c[0] for c in CASES])
def test_builder_method(method, make: Callable, check: str, expected: str, ctx, names, sandboxes: Sandboxes):
    tpl = make(ctx)
    name = names(method.replace("_", "-"))
    build(tpl, name)
    sbx = sandboxes.create(template=name)
    assert sh(sbx, check) == expected


def test_bun_install_fails_like_on_a_base_without_bun(names):
    # E2B's base has no bun either: the build fails at that step with the shell's answer.
    with pytest.raises(BuildException) as e:
        build(base().bun_install("left-pad"), names("bun"))
    assert "bun: command not found" in str(e.value) and "code 127" in str(e.value), str(e.value)


def test_methods_of_other_e2b_templates_are_refused_by_the_sdk():
    # add_mcp_server and the dev container methods need E2B's mcp-gateway / devcontainer templates: the SDK
    # refuses them before any request (nothing of SoulBox's runs).
    with pytest.raises(BuildException, match="mcp-gateway"):
        base().add_mcp_server("x")
    with pytest.raises(BuildException, match="devcontainer"):
        base().beta_dev_container_prebuild("/app")
    with pytest.raises(BuildException, match="devcontainer"):
        base().beta_set_dev_container_start("/app")


def test_skip_cache_reruns_every_step(names):
    def tpl(skip_cache: bool = False):
        return base(skip_cache=skip_cache).run_cmd(f"echo cached-{RUN_ID}").run_cmd("echo second")

    build(tpl(), names("cache1"))
    logs = build(tpl(), names("cache2"))
    assert sum(l.startswith("CACHED ") for l in logs) == 2, logs
    logs = build(tpl(skip_cache=True), names("cache3"))
    assert not any(l.startswith("CACHED ") for l in logs) and f"cached-{RUN_ID}" in logs, logs
    # the builder's skip_cache() in the middle: the steps before it stay cached
    logs = build(base().run_cmd(f"echo cached-{RUN_ID}").skip_cache().run_cmd("echo second"), names("cache4"))
    assert [l.startswith("CACHED ") for l in logs if "echo" in l] == [True, False], logs


def test_run_as_a_user_that_does_not_exist_says_what_e2b_says(names):
    with pytest.raises(BuildException) as e:
        build(Template().from_template("base").skip_cache().run_cmd("whoami", user="root123"), names("nouser"))
    assert (
        "failed to run command 'whoami': command failed: unauthenticated: invalid username: 'root123'" in str(e.value)
    ), str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# COPY and symlinks


def symlink_context(root: Path, host_secret: Path, host_dir: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "app" / "sub").mkdir(parents=True)
    (ctx / "app" / "a.txt").write_text("a\n")
    (ctx / "app" / "sub" / "s.txt").write_text("s\n")
    links = {
        "rel": "a.txt",
        "rel_dir": "sub",
        "up": "../outside.txt",
        "abs": "/etc/hostname",
        "dangling": "missing.txt",
        "dangling_abs": "/nonexistent/file",
        # hostile: absolute and climbing links to host files and directories that exist on this machine
        "host_secret": str(host_secret),
        "host_dir": str(host_dir),
        "climb": "../" * 12 + str(host_secret).lstrip("/"),
    }
    for name, target in links.items():
        os.symlink(target, ctx / "app" / name)
    (ctx / "outside.txt").write_text("outside\n")
    (ctx / "over").mkdir()
    for name in ["host_secret", "dangling_abs"]:
        (ctx / "over" / name).write_text(f"replaced {name}\n")
    return ctx


def test_copy_keeps_symlinks_and_never_touches_the_host(tmp_path, names, sandboxes: Sandboxes):
    host_secret = tmp_path / "host-secret.txt"
    host_secret.write_text("host secret, never in a template\n")
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    ctx = symlink_context(tmp_path, host_secret, host_dir)
    tpl = (
        Template(file_context_path=str(ctx))
        .from_template("base")
        .copy("app/", "/home/user/app/")
        .copy("app", "/opt/app-mode", mode=0o750, user="root")
        # a later COPY replaces links in its way (BuildKit's rule) rather than writing through them
        .copy("over/", "/home/user/app/")
        .copy("app/dangling", "/opt/single-link")
        .run_cmd("readlink /home/user/app/rel")
    )
    name = names("links")
    build(tpl, name)
    assert list(host_dir.iterdir()) == [], "the build wrote nothing into the host directory"
    assert host_secret.read_text() == "host secret, never in a template\n"
    sbx = sandboxes.create(template=name)
    listing = sh(sbx, "cd /home/user/app && for f in rel rel_dir up abs dangling host_dir climb; do echo $f $(readlink $f); done")
    assert listing.splitlines() == [
        "rel a.txt",
        "rel_dir sub",
        "up ../outside.txt",
        "abs /etc/hostname",
        "dangling missing.txt",
        f"host_dir {host_dir}",
        f"climb {'../' * 12}{str(host_secret).lstrip('/')}",
    ]
    assert sh(sbx, "cat /home/user/app/rel /home/user/app/rel_dir/s.txt") == "a\ns"
    # links resolve inside the sandbox: the host's file and directory are not there
    assert sh(sbx, "cd /home/user/app && for f in climb host_dir; do test -e $f || echo $f missing; done") == (
        "climb missing\nhost_dir missing"
    )
    assert sh(sbx, "cd /home/user/app && find host_secret dangling_abs -printf '%y ' && cat host_secret dangling_abs") == (
        "f f replaced host_secret\nreplaced dangling_abs"
    )
    assert sh(sbx, "test -e /nonexistent || echo absent") == "absent"
    # mode applies to files and directories, never through a link (the link's target is not chmodded)
    assert sh(sbx, "find /opt/app-mode/a.txt /opt/app-mode/sub -printf '%u %m\\n'; find /etc/hostname -printf %m") == (
        "root 750\nroot 750\n644"
    )
    assert sh(sbx, "find /opt/app-mode/dangling /opt/single-link -printf '%y %l\\n'") == "l missing.txt\nl missing.txt"


def test_copy_with_resolve_symlinks_copies_the_targets(tmp_path, names, sandboxes: Sandboxes):
    ctx = tmp_path / "ctx"
    (ctx / "app" / "sub").mkdir(parents=True)
    (ctx / "app" / "a.txt").write_text("a\n")
    (ctx / "target.txt").write_text("absolute target\n")
    os.symlink("a.txt", ctx / "app" / "rel")
    os.symlink(str(ctx / "target.txt"), ctx / "app" / "abs")
    tpl = Template(file_context_path=str(ctx)).from_template("base").copy("app/", "/home/user/app/", resolve_symlinks=True)
    name = names("resolve")
    build(tpl, name)
    sbx = sandboxes.create(template=name)
    assert sh(sbx, "cd /home/user/app && find rel abs -printf '%y ' && cat rel abs") == "f f a\nabsolute target"


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles: root until USER, `user` afterwards unless set (E2B's rule), through SoulBox's CLI and the SDK


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SOULBOX), *args], capture_output=True, text=True, timeout=600)


DOCKERFILE = "FROM base\nRUN echo x > /built.txt && whoami > /built-as.txt && pwd >> /built-as.txt\n"
DOCKERFILE_WITH_USER = (
    "FROM base\nRUN useradd -m builder\nUSER builder\nWORKDIR /home/builder\nRUN whoami > /home/builder/who\n"
)


@pytest.mark.parametrize("front_end", ["soulbox-cli", "sdk"])
def test_dockerfile_runs_as_root_until_user_and_defaults_to_user(front_end, tmp_path, names, sandboxes: Sandboxes):
    plain, with_user = names("df-plain"), names("df-user")
    for name, text in [(plain, DOCKERFILE), (with_user, DOCKERFILE_WITH_USER)]:
        if front_end == "sdk":
            Template.build(Template().from_dockerfile(text), name)
            continue
        (tmp_path / "Dockerfile").write_text(text)
        r = cli("template", "build", "-f", str(tmp_path / "Dockerfile"), str(tmp_path), "--name", name)
        assert r.returncode == 0, r.stdout + r.stderr
    sbx = sandboxes.create(template=plain)
    assert sh(sbx, "cat /built.txt /built-as.txt; whoami; pwd") == "x\nroot\n/\nuser\n/home/user"
    sbx = sandboxes.create(template=with_user)
    r = sbx.commands.run("cat who; whoami; pwd")
    assert r.stdout.split() == ["builder", "builder", "/home/builder"], r.stdout


def test_to_dockerfile_output_builds_through_the_soulbox_cli(tmp_path, names, sandboxes: Sandboxes):
    # to_json and to_dockerfile are the SDK's own conversions; what to_dockerfile writes must build here.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.txt").write_text("hello\n")
    tpl = (
        Template(file_context_path=str(tmp_path))
        .from_base_image()
        .set_envs({"GREETING": "hi"})
        .run_cmd("echo $GREETING > /tmp/g")
        .copy("app/hello.txt", "/tmp/hello.txt")
        .set_workdir("/tmp")
        .set_user("root")
    )
    assert json.loads(Template.to_json(tpl))["fromImage"] == "e2bdev/base"
    text = Template.to_dockerfile(tpl)
    assert text.startswith("FROM e2bdev/base\n"), text
    (tmp_path / "Dockerfile").write_text(text)
    name = names("to-dockerfile")
    r = cli("template", "build", "-f", str(tmp_path / "Dockerfile"), str(tmp_path), "--name", name)
    assert r.returncode == 0, r.stdout + r.stderr
    sbx = sandboxes.create(template=name)
    assert sh(sbx, "cat /tmp/g /tmp/hello.txt; whoami; pwd") == "hi\nhello\nroot\n/tmp"


def test_switching_to_user_on_an_image_without_it_creates_it_as_e2b_does(tmp_path, names, sandboxes: Sandboxes):
    # An image without E2B's `user` (here: base with it removed): a Dockerfile's implicit final `USER user`
    # (CLI) and an explicit set_user("user") (SDK) create the account, with a home and passwordless sudo.
    nouser = names("nouser")
    build(
        Template().from_template("base").set_user("root").set_workdir("/").run_cmd("userdel -r user && rm /etc/sudoers.d/user"),
        nouser,
    )
    from_dockerfile, from_sdk = names("df-nouser"), names("sdk-nouser")
    (tmp_path / "Dockerfile").write_text(f"FROM {nouser}\nRUN id user || echo no-user-yet\n")
    r = cli("template", "build", "-f", str(tmp_path / "Dockerfile"), str(tmp_path), "--name", from_dockerfile)
    assert r.returncode == 0 and "no-user-yet" in r.stdout, r.stdout + r.stderr
    build(
        Template().from_template(nouser).set_user("user").set_workdir("/home/user").run_cmd("whoami > /tmp/built-as"),
        from_sdk,
    )
    for name in (from_dockerfile, from_sdk):
        sbx = sandboxes.create(template=name)
        out = sbx.commands.run("whoami; pwd; echo $HOME")
        assert out.stdout.split() == ["user", "/home/user", "/home/user"], (name, out.stdout, out.stderr)
        # gVisor refuses sudo's setuid climb (README, gVisor's known bugs); on runc the account has sudo as on E2B.
        if "gVisor" not in sbx.commands.run("dmesg 2>&1 | head -3", user="root").stdout:
            assert sbx.commands.run("sudo -n whoami").stdout.strip() == "root", name
    assert sbx.files.read("/tmp/built-as") == "user\n"
