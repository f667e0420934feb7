"""Issue 16: E2B's Code Interpreter SDK (`e2b_code_interpreter`, unmodified) against `soulbox server`.

`Sandbox.create()` of the Code Interpreter SDK starts the template `code-interpreter-v1`, which the server builds
on first use (the module's one sandbox waits for that build, minutes when cold; the data dir keeps it for warm
runs). Then `run_code` and the contexts API go to our execution service on port 49999 through the server's
proxy (`E2b-Sandbox-Port: 49999`). Nothing here needs the network."""

from __future__ import annotations

import base64
import os
import re
import subprocess

import pytest
from e2b import NotFoundException, SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox as CodeInterpreter

from conftest import API_KEY, API_URL, RUN_ID

# A cold first use builds the template (apt from the Debian mirror): generous, and a create that waits longer
# than the SDK's default 60 s request timeout.
FIRST_CREATE_TIMEOUT_S = 1800
SANDBOX_ENV = {"SOULBOX_E2E_FROM_CREATE": "create-value"}


@pytest.fixture(scope="module")
def ci(api) -> CodeInterpreter:
    sbx = CodeInterpreter.create(
        timeout=600,
        envs=SANDBOX_ENV,
        metadata={"e2e-run": RUN_ID, "role": "code-interpreter"},
        request_timeout=FIRST_CREATE_TIMEOUT_S,
    )
    try:
        yield sbx
    finally:
        api.delete(f"/sandboxes/{sbx.sandbox_id}")


def test_run_code_returns_the_main_result(ci):
    execution = ci.run_code("1+1")
    assert execution.error is None
    assert execution.text == "2"
    assert [r.is_main_result for r in execution.results] == [True]
    assert isinstance(execution.execution_count, int) and execution.execution_count >= 1


def test_state_is_kept_between_executions_of_the_default_context(ci):
    ci.run_code("kept_value = 40")
    assert ci.run_code("kept_value + 2").text == "42"


def test_output_streams_while_the_code_runs(ci, tmp_path):
    # The code prints, then waits for a file that only the on_stdout callback creates: if stdout arrived only
    # when the execution ended, the code would never see the file and would end with "never released".
    release = f"/tmp/release-{os.urandom(4).hex()}"
    code = f"""
import os, time
print("waiting", flush=True)
for _ in range(1200):
    if os.path.exists({release!r}):
        print("released", flush=True)
        break
    time.sleep(0.05)
else:
    print("never released", flush=True)
"""
    seen = []

    def on_stdout(msg):
        seen.append(msg.line)
        if msg.line.strip() == "waiting":
            ci.files.write(release, "go")

    execution = ci.run_code(code, on_stdout=on_stdout)
    assert execution.error is None, execution.error
    assert [line.strip() for line in seen] == ["waiting", "released"]
    assert all(isinstance(line, str) for line in execution.logs.stdout)


def test_stderr_arrives_with_a_timestamp(ci):
    got = []
    execution = ci.run_code("import sys; print('to stderr', file=sys.stderr)", on_stderr=got.append)
    assert [m.line for m in got] == ["to stderr\n"]
    assert got[0].error is True and got[0].timestamp > 0
    assert execution.logs.stderr == ["to stderr\n"]


def test_matplotlib_figure_is_a_png(ci):
    execution = ci.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()"
    )
    assert execution.error is None, execution.error
    pngs = [r.png for r in execution.results if r.png]
    assert len(pngs) == 1, execution.results
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not execution.results[0].is_main_result  # a display, not the cell's value


def test_pandas_dataframe_has_html_and_text(ci):
    execution = ci.run_code("import pandas as pd\npd.DataFrame({'name': ['a', 'b'], 'n': [1, 2]})")
    main = [r for r in execution.results if r.is_main_result]
    assert len(main) == 1
    assert "<table" in main[0].html and "name" in main[0].html
    assert "name" in main[0].text
    assert set(main[0].formats()) >= {"text", "html"}


def test_other_mime_types_reach_their_fields(ci):
    execution = ci.run_code(
        "from IPython.display import display, Markdown, Latex, SVG, JSON, Javascript\n"
        "display(Markdown('**bold**'))\n"
        "display(Latex(r'$x^2$'))\n"
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1\" height=\"1\"></svg>'))\n"
        "display(JSON({'k': 1}))\n"
        "display(Javascript('console.log(1)'))\n"
        "display({'application/x-soulbox-test': 'custom'}, raw=True)"
    )
    assert execution.error is None, execution.error
    r = execution.results
    assert r[0].markdown == "**bold**"
    assert r[1].latex == "$x^2$"
    assert "<svg" in r[2].svg
    assert r[3].json == {"k": 1}
    assert r[4].javascript == "console.log(1)"
    assert r[5].extra == {"application/x-soulbox-test": "custom"}


def test_error_has_name_value_and_traceback(ci):
    errors = []
    execution = ci.run_code("def f():\n    return 1 / 0\nf()", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    # IPython colours its tracebacks (as in E2B's): read it without the escape codes
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", execution.error.traceback)
    assert "ZeroDivisionError" in traceback and "return 1 / 0" in traceback and "f()" in traceback
    assert errors and errors[0].name == "ZeroDivisionError"
    # the context still works after an error
    assert ci.run_code("'fine'").text == "fine"


def test_contexts_keep_state_apart_and_restart_clears_it(ci):
    first = ci.create_code_context()
    second = ci.create_code_context(language="python")
    try:
        assert first.language == "python" and first.cwd == "/home/user"
        ids = {c.id for c in ci.list_code_contexts()}
        assert {first.id, second.id} <= ids

        ci.run_code("only_in_first = 7", context=first)
        assert ci.run_code("only_in_first * 6", context=first).text == "42"
        isolated = ci.run_code("only_in_first", context=second)
        assert isolated.error is not None and isolated.error.name == "NameError"
        default = ci.run_code("only_in_first")
        assert default.error is not None and default.error.name == "NameError"

        ci.restart_code_context(first)
        cleared = ci.run_code("only_in_first", context=first)
        assert cleared.error is not None and cleared.error.name == "NameError"
    finally:
        ci.remove_code_context(first)
        ci.remove_code_context(second.id)
    ids = {c.id for c in ci.list_code_contexts()}
    assert first.id not in ids and second.id not in ids
    with pytest.raises(NotFoundException):
        ci.run_code("1", context=first)


def test_context_cwd(ci):
    assert ci.run_code("import os; os.getcwd()").text == "/home/user"
    ctx = ci.create_code_context(cwd="/tmp")
    try:
        assert ctx.cwd == "/tmp"
        assert ci.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    finally:
        ci.remove_code_context(ctx)
    with pytest.raises(SandboxException, match="not a directory"):
        ci.create_code_context(cwd="/no/such/dir")


def test_env_vars_per_execution_and_from_create(ci):
    code = "import os, subprocess; (os.environ.get('E2E_EXEC_VAR'), subprocess.run(['sh', '-c', 'echo $E2E_EXEC_VAR'], capture_output=True, text=True).stdout.strip())"
    assert ci.run_code(code, envs={"E2E_EXEC_VAR": "per-execution"}).text == "('per-execution', 'per-execution')"
    # gone again in the next execution, and the kernel's own env untouched
    assert ci.run_code(code).text == "(None, '')"
    assert ci.run_code("import os; os.environ.get('SOULBOX_E2E_FROM_CREATE')").text == "create-value"
    ci.run_code("import os; os.environ['SOULBOX_E2E_FROM_CREATE'] = 'kernel-value'")
    assert ci.run_code("os.environ['SOULBOX_E2E_FROM_CREATE']", envs={"SOULBOX_E2E_FROM_CREATE": "x"}).text == "x"
    assert ci.run_code("os.environ['SOULBOX_E2E_FROM_CREATE']").text == "kernel-value"


def test_timeout_interrupts_the_execution(ci):
    ctx = ci.create_code_context()
    try:
        with pytest.raises(TimeoutException):
            ci.run_code("spins = 0\nwhile True:\n    spins += 1", context=ctx, timeout=2)
        # Only an interrupted kernel answers: a kernel still spinning would make this time out too.
        after = ci.run_code("spins > 0", context=ctx, timeout=60)
        assert after.text == "True", after
    finally:
        ci.remove_code_context(ctx)


def test_an_unavailable_language_is_a_clear_error(ci):
    # Java has no kernel in the registries a build can reach (Debian 12 packages none).
    with pytest.raises(SandboxException, match="language 'java' is not available"):
        ci.run_code("1", language="java")
    with pytest.raises(SandboxException, match="language 'java' is not available"):
        ci.create_code_context(language="java")
    with pytest.raises(SandboxException, match="language 'cobol' is not available .*bash, javascript, python, r"):
        ci.run_code("1", language="cobol")


def _streams_before_the_end(ci, language: str, code_for_release) -> list[str]:
    """Runs code that prints "waiting", then waits for a file only the on_stdout callback creates."""
    release = f"/tmp/release-{os.urandom(4).hex()}"
    seen = []

    def on_stdout(msg):
        seen.append(msg.line.strip())
        if msg.line.strip() == "waiting":
            ci.files.write(release, "go")

    execution = ci.run_code(code_for_release(release), language=language, on_stdout=on_stdout, timeout=120)
    assert execution.error is None, execution.error
    return seen


def test_bash_keeps_state_streams_and_reports_the_exit_status(ci):
    ctx = ci.create_code_context(language="bash")
    try:
        assert ctx.language == "bash"
        ci.run_code("KEPT=kept; cd /tmp; greet() { echo \"hi $1\"; }", context=ctx)
        kept = ci.run_code('echo "$KEPT in $(pwd)"; greet there', context=ctx)
        assert kept.error is None and "".join(kept.logs.stdout) == "kept in /tmp\nhi there\n"
        failed = ci.run_code("echo to-stderr >&2; exit_with() { return $1; }; exit_with 3", context=ctx)
        assert failed.error is not None and failed.error.value == "exit status 3"
        assert "".join(failed.logs.stderr) == "to-stderr\n"
        again = ci.run_code('echo "$KEPT"', context=ctx)
        assert "".join(again.logs.stdout) == "kept\n", "the shell outlives an error"
    finally:
        ci.remove_code_context(ctx)
    seen = _streams_before_the_end(
        ci, "bash", lambda release: f"echo waiting; for i in $(seq 1200); do [ -e {release} ] && break; sleep 0.05; done; "
        f"[ -e {release} ] && echo released || echo never released"
    )
    assert seen == ["waiting", "released"]


def test_bash_timeout_interrupts_the_command_and_keeps_the_shell(ci):
    ctx = ci.create_code_context(language="bash")
    try:
        ci.run_code("STILL=here", context=ctx)
        with pytest.raises(TimeoutException):
            ci.run_code("sleep 600", context=ctx, timeout=2)
        after = ci.run_code('echo "$STILL"', context=ctx, timeout=60)
        assert after.error is None and "".join(after.logs.stdout) == "here\n"
    finally:
        ci.remove_code_context(ctx)


def test_javascript_keeps_state_awaits_imports_and_reports_errors(ci):
    ci.run_code("const base = 40\nfunction twice(x) { return 2 * x }", language="js")
    assert ci.run_code("base + 2", language="js").text == "42"
    assert ci.run_code("const base = 1; twice(base)", language="javascript").text == "2", "a cell may declare again"
    awaited = ci.run_code(
        "import { join } from 'node:path'\nawait new Promise((r) => setTimeout(r, 10))\njoin('a', 'b')",
        language="js",
    )
    assert awaited.error is None, awaited.error
    assert awaited.text == "a/b" and awaited.results[0].is_main_result
    printed = ci.run_code("console.log('out'); console.error('err'); ({ k: [1, 2] })", language="js")
    assert "".join(printed.logs.stdout) == "out\n" and "".join(printed.logs.stderr) == "err\n"
    assert printed.text == "{ k: [ 1, 2 ] }"
    failed = ci.run_code("function f() { throw new TypeError('boom') }\nf()", language="js")
    assert failed.error is not None
    assert (failed.error.name, failed.error.value) == ("TypeError", "boom")
    assert "TypeError: boom" in failed.error.traceback
    seen = _streams_before_the_end(
        ci, "js", lambda release: "console.log('waiting')\nlet released = false\n"
        "for (let i = 0; i < 1200 && !released; i++) {\n"
        "  await new Promise((r) => setTimeout(r, 50))\n"
        f"  released = require('fs').existsSync({release!r})\n"
        "}\nconsole.log(released ? 'released' : 'never released')"
    )
    assert seen == ["waiting", "released"]


def test_javascript_rich_results_follow_denos_display_protocol(ci):
    """E2B runs JavaScript on Deno's kernel: a value with a `Symbol.for('Jupyter.display')` method shows as the
    MIME bundle it returns, image bytes as the image. Our driver does the same, and gives `display(value)` (a
    display beside the cell's result) with `display.html`/`.markdown`/`.svg`/`.json`/`.latex`/`.mime`."""
    html = ci.run_code("display.html`<b>${1 + 1}</b>`", language="js")
    assert html.error is None, html.error
    assert (html.results[0].html, html.results[0].is_main_result) == ("<b>2</b>", True)
    shown = ci.run_code(
        "display(display.markdown('# title'));\ndisplay({ a: 1 });\n"
        "({ [Symbol.for('Jupyter.display')]() { return { 'image/svg+xml': '<svg/>', 'text/plain': 'an svg' } } })",
        language="js",
    )
    assert shown.error is None, shown.error
    assert [r.is_main_result for r in shown.results] == [False, False, True], shown.results
    assert shown.results[0].markdown == "# title" and shown.results[1].text == "{ a: 1 }"
    assert (shown.results[2].svg, shown.results[2].text) == ("<svg/>", "an svg")
    png = ci.run_code("Buffer.from('89504e470d0a1a0a0000', 'hex')", language="js")
    assert base64.b64decode(png.results[0].png).startswith(b"\x89PNG\r\n\x1a\n")
    assert ci.run_code("display.json({ k: [1, 2] })", language="js").results[0].json == {"k": [1, 2]}


def _rss_mib(ci, pid: int) -> float:
    status = ci.commands.run(f"cat /proc/{pid}/status").stdout
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


@pytest.mark.timeout(900)
def test_memory_stays_bounded_over_thousands_of_executions(ci):
    """3000 small executions in one context: neither the service nor the kernel keeps something per execution
    (outputs, replies, digests) without bound. Measured after a warm-up, so imports and caches are already in."""
    ctx = ci.create_code_context()
    try:
        kernel = int(ci.run_code("import os; os.getpid()", context=ctx).text)
        service = int(ci.commands.run("pgrep -of code-interpreter/main.py").stdout.split()[0])
        for i in range(200):
            ci.run_code(f"x = {i}\nprint(x)\nx", context=ctx)
        first = {"service": _rss_mib(ci, service), "kernel": _rss_mib(ci, kernel)}
        for i in range(3000):
            execution = ci.run_code(f"x = {i}\nprint(x)\nx", context=ctx)
        assert execution.text == "2999" and execution.logs.stdout == ["2999\n"]
        last = {"service": _rss_mib(ci, service), "kernel": _rss_mib(ci, kernel)}
        for name in first:
            assert last[name] < first[name] * 1.5 + 20, (name, first, last)
    finally:
        ci.remove_code_context(ctx)


def test_typescript_is_transpiled_and_keeps_state(ci):
    ctx = ci.create_code_context(language="ts")
    try:
        assert ctx.language == "typescript"
        ci.run_code("interface Point { x: number; y: number }\nconst p: Point = { x: 20, y: 22 }", context=ctx)
        assert ci.run_code("(p.x + p.y) as number", context=ctx).text == "42"
        failed = ci.run_code("const s: string = 'x'\nthrow new RangeError(`bad ${s}`)", context=ctx)
        assert failed.error is not None and (failed.error.name, failed.error.value) == ("RangeError", "bad x")
    finally:
        ci.remove_code_context(ctx)


def test_javascript_timeout_interrupts_a_busy_loop(ci):
    ctx = ci.create_code_context(language="js")
    try:
        ci.run_code("let spins = 0", context=ctx)
        with pytest.raises(TimeoutException):
            ci.run_code("while (true) { spins++ }", context=ctx, timeout=2)
        after = ci.run_code("spins > 0", context=ctx, timeout=60)
        assert after.text == "true", after
    finally:
        ci.remove_code_context(ctx)


def test_r_keeps_state_streams_and_reports_errors(ci):
    ctx = ci.create_code_context(language="r")
    try:
        assert ctx.language == "r"
        ci.run_code("kept <- 40", context=ctx)
        # IRkernel shows a value as display data (E2B runs IRkernel too): a result, not the main result
        value = ci.run_code("kept + 2", context=ctx)
        assert value.error is None and [r.text for r in value.results] == ["[1] 42"]
        printed = ci.run_code('cat("from R\\n")', context=ctx)
        assert "".join(printed.logs.stdout) == "from R\n"
        failed = ci.run_code('stop("custom failure")', context=ctx)
        assert failed.error is not None and "custom failure" in failed.error.value
    finally:
        ci.remove_code_context(ctx)


def test_env_vars_per_execution_in_every_language(ci):
    envs = {"E2E_LANG_VAR": "it's \"quoted\""}
    bash = ci.run_code('echo "$E2E_LANG_VAR"', language="bash", envs=envs)
    assert "".join(bash.logs.stdout) == "it's \"quoted\"\n"
    unset = ci.run_code('echo "[${E2E_LANG_VAR-unset}]"', language="bash")
    assert "".join(unset.logs.stdout) == "[unset]\n"
    assert ci.run_code("process.env.E2E_LANG_VAR", language="js", envs=envs).text == "it's \"quoted\""
    assert ci.run_code("process.env.E2E_LANG_VAR === undefined", language="js").text == "true"
    in_r = ci.run_code('cat(Sys.getenv("E2E_LANG_VAR"))', language="r", envs=envs)
    assert "".join(in_r.logs.stdout) == "it's \"quoted\""
    gone = ci.run_code('cat(Sys.getenv("E2E_LANG_VAR", unset = "gone"))', language="r")
    assert "".join(gone.logs.stdout) == "gone"
    from_create = ci.run_code("echo $SOULBOX_E2E_FROM_CREATE", language="bash")
    assert "".join(from_create.logs.stdout) == "create-value\n"
    with pytest.raises(SandboxException, match="env var names"):
        ci.run_code("true", language="bash", envs={"not a name": "x"})


def test_prepare_command_reports_a_shipped_template_ready():
    """`soulbox template prepare` against the server the module's sandbox came from (built by then)."""
    soulbox = os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "soulbox")
    env = {"PATH": os.environ.get("PATH", ""), "SOULBOX_API_URL": API_URL, "SOULBOX_API_KEY": API_KEY}
    ready = subprocess.run([soulbox, "template", "prepare", "code-interpreter-v1"], env=env, capture_output=True, text=True, timeout=1800)
    assert ready.returncode == 0, ready.stderr
    assert "code-interpreter-v1 is ready" in ready.stdout, ready.stdout
    unknown = subprocess.run([soulbox, "template", "prepare", "no-such-shipped"], env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 3 and "not a template SoulBox ships" in unknown.stderr, unknown.stderr


def test_pause_and_resume_keep_every_kernels_state(api):
    """A memory pause keeps the sandbox's processes, so each language's context keeps its state."""
    sbx = CodeInterpreter.create(timeout=300, metadata={"e2e-run": RUN_ID, "role": "code-interpreter-pause"})
    try:
        contexts = {lang: sbx.create_code_context(language=lang) for lang in ("javascript", "bash", "r")}
        sbx.run_code("kept_py = 41")
        sbx.run_code("const keptJs = 41", context=contexts["javascript"])
        sbx.run_code("KEPT_SH=41", context=contexts["bash"])
        sbx.run_code("kept_r <- 41", context=contexts["r"])
        assert sbx.pause() is True
        resumed = CodeInterpreter.connect(sbx.sandbox_id, timeout=120)
        assert resumed.run_code("kept_py + 1").text == "42"
        assert resumed.run_code("keptJs + 1", context=contexts["javascript"]).text == "42"
        shell = resumed.run_code("echo $((KEPT_SH + 1))", context=contexts["bash"])
        assert "".join(shell.logs.stdout) == "42\n"
        in_r = resumed.run_code("cat(kept_r + 1)", context=contexts["r"])
        assert "".join(in_r.logs.stdout) == "42"
    finally:
        api.delete(f"/sandboxes/{sbx.sandbox_id}")
