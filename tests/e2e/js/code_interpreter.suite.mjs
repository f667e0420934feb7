// Issue 16: the official `@e2b/code-interpreter` npm SDK (unmodified) against `code-interpreter-v1` on a running
// `soulbox server` (tests/e2e/run.sh builds the template before the suites, so no create here waits on a build).
// run_code in Python and in JavaScript/TypeScript, bash: results, state kept, errors, streamed output; rich
// results (PNG, chart data, HTML), contexts, env vars, the execution timeout.
//
// One suite, two SDK releases (package.json): the newest (code_interpreter.test.mjs) and a pinned older one under
// the npm alias `code-interpreter-pinned` on its own older `e2b` (code_interpreter_pinned.test.mjs). The suite's
// name says which ran.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run through tests/e2e/run.sh`)
}

function installedVersion(dir) {
  return JSON.parse(readFileSync(new URL(`./node_modules/${dir}/package.json`, import.meta.url), 'utf8')).version
}

/** The `e2b` the package `module` loads: its own nested copy (an npm override) or the top-level one. */
function coreVersionUnder(module) {
  const nested = `${module}/node_modules/e2b`
  return installedVersion(existsSync(new URL(`./node_modules/${nested}`, import.meta.url)) ? nested : 'e2b')
}

/** Defines the suite against the package installed as `module` (a name or an npm alias). */
export async function codeInterpreterSuite(module) {
  const { Sandbox } = await import(module)
  const label = `@e2b/code-interpreter ${installedVersion(module)} on e2b ${coreVersionUnder(module)}`
  describe(label, () => {
    let sbx
    before(async () => {
      sbx = await Sandbox.create({
        timeoutMs: 300_000,
        requestTimeoutMs: 600_000,
        metadata: { suite: 'js-code-interpreter', sdk: installedVersion(module) },
      })
    })
    after(async () => {
      if (sbx) await sbx.kill().catch(() => {})
    })

    test('python: the main result, state kept, an error with its traceback', async () => {
      const first = await sbx.runCode('1+1')
      assert.equal(first.error, undefined)
      assert.equal(first.text, '2')
      await sbx.runCode('kept = 40')
      assert.equal((await sbx.runCode('kept + 2')).text, '42')
      const failed = await sbx.runCode('1/0')
      assert.equal(failed.error.name, 'ZeroDivisionError')
      assert.match(failed.error.traceback, /ZeroDivisionError/)
    })

    test('javascript: state kept, top-level await, import, the last value, errors', async () => {
      await sbx.runCode('const base = 40', { language: 'js' })
      assert.equal((await sbx.runCode('base + 2', { language: 'js' })).text, '42')
      const awaited = await sbx.runCode(
        "import { join } from 'node:path'\nawait new Promise((r) => setTimeout(r, 10))\njoin('a', 'b')",
        { language: 'javascript' },
      )
      assert.equal(awaited.error, undefined, JSON.stringify(awaited.error))
      assert.equal(awaited.text, 'a/b')
      const failed = await sbx.runCode("throw new TypeError('boom')", { language: 'js' })
      assert.equal(failed.error.name, 'TypeError')
      assert.equal(failed.error.value, 'boom')
      assert.match(failed.error.traceback, /TypeError: boom/)
      // the context survives its error
      assert.equal((await sbx.runCode('base', { language: 'js' })).text, '40')
    })

    test('javascript: console output streams before the execution ends', async () => {
      const release = `/tmp/release-js-${Date.now()}`
      const seen = []
      const code = `
    const fs = require('fs')
    console.log('waiting')
    let released = false
    for (let i = 0; i < 1200 && !released; i++) {
      await new Promise((r) => setTimeout(r, 50))
      released = fs.existsSync(${JSON.stringify(release)})
    }
    console.log(released ? 'released' : 'never released')`
      const execution = await sbx.runCode(code, {
        language: 'js',
        onStdout: async (msg) => {
          seen.push(msg.line.trim())
          if (msg.line.trim() === 'waiting') await sbx.files.write(release, 'go')
        },
      })
      assert.equal(execution.error, undefined, JSON.stringify(execution.error))
      assert.deepEqual(seen, ['waiting', 'released'])
    })

    test('typescript and bash each keep their own state', async () => {
      const ts = await sbx.runCode('const n: number = 41\nn + 1', { language: 'ts' })
      assert.equal(ts.error, undefined, JSON.stringify(ts.error))
      assert.equal(ts.text, '42')
      await sbx.runCode('export SHELL_KEPT=kept; cd /tmp', { language: 'bash' })
      const bash = await sbx.runCode('echo "$SHELL_KEPT in $(pwd)"', { language: 'bash' })
      assert.deepEqual(bash.logs.stdout, ['kept in /tmp\n'])
      const failed = await sbx.runCode('echo no >&2; false', { language: 'bash' })
      assert.equal(failed.error.value, 'exit status 1')
      assert.deepEqual(failed.logs.stderr, ['no\n'])
    })

    test('rich results: a matplotlib PNG with its chart data, a pandas DataFrame as HTML', async () => {
      const plot = await sbx.runCode(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9], label='squares')\nplt.title('growth')\nplt.show()",
      )
      assert.equal(plot.error, undefined, JSON.stringify(plot.error))
      const figures = plot.results.filter((r) => r.png)
      assert.equal(figures.length, 1)
      assert.equal(Buffer.from(figures[0].png, 'base64').subarray(0, 8).toString('hex'), '89504e470d0a1a0a')
      const chart = figures[0].chart
      assert.equal(chart.type, 'line')
      assert.equal(chart.title, 'growth')
      assert.equal(chart.elements[0].label, 'squares')
      assert.deepEqual(chart.elements[0].points, [[1, 1], [2, 4], [3, 9]])
      const frame = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
      assert.equal(frame.error, undefined, JSON.stringify(frame.error))
      assert.match(frame.results[0].html, /<table/)
      assert.ok(frame.results[0].isMainResult)
    })

    test('contexts: own cwd and state, listed, restart clears them, removed', async () => {
      const ctx = await sbx.createCodeContext({ language: 'python', cwd: '/tmp' })
      assert.equal(ctx.cwd, '/tmp')
      await sbx.runCode('secret = 7', { context: ctx })
      assert.equal((await sbx.runCode('import os; (secret, os.getcwd())', { context: ctx })).text, "(7, '/tmp')")
      const elsewhere = await sbx.runCode('secret')
      assert.equal(elsewhere.error.name, 'NameError', 'the default context does not see it')
      assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
      await sbx.restartCodeContext(ctx)
      assert.equal((await sbx.runCode('secret', { context: ctx })).error.name, 'NameError')
      await sbx.removeCodeContext(ctx)
      assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
    })

    test('env vars per execution, and a timeout that interrupts the execution', async () => {
      const read = "import os; print(os.environ.get('PER_RUN'))"
      assert.deepEqual((await sbx.runCode(read, { envs: { PER_RUN: 'only-now' } })).logs.stdout, ['only-now\n'])
      assert.deepEqual((await sbx.runCode(read)).logs.stdout, ['None\n'], 'restored after the run')
      await assert.rejects(sbx.runCode('import time; time.sleep(30)', { timeoutMs: 2_000 }), { name: 'TimeoutError' })
      // The kernel was interrupted, not left sleeping: the next execution answers at once.
      assert.equal((await sbx.runCode('6*7', { timeoutMs: 20_000 })).text, '42')
    })
  })
}
