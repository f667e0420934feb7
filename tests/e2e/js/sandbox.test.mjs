// Drives a running `soulbox server` with the official e2b JS SDK. Needs E2B_API_URL, E2B_SANDBOX_URL and
// E2B_API_KEY in the environment (tests/e2e/run.sh provides them).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run through tests/e2e/run.sh`)
}

const created = []
after(async () => {
  for (const sbx of created) await sbx.kill().catch(() => {})
})

async function sandbox(opts = {}) {
  const sbx = await Sandbox.create({ timeoutMs: 120_000, ...opts })
  created.push(sbx)
  return sbx
}

test('create, run commands, exit codes', async () => {
  const sbx = await sandbox({ metadata: { suite: 'js' } })
  assert.match(sbx.sandboxId, /^[a-z0-9]+$/)
  const r = await sbx.commands.run('echo hello from $(whoami) in $(pwd)')
  assert.equal(r.stdout, 'hello from user in /home/user\n')
  assert.equal(r.exitCode, 0)
  await assert.rejects(sbx.commands.run('echo oops >&2; exit 3'), (e) => {
    assert.ok(e instanceof CommandExitError)
    assert.equal(e.exitCode, 3)
    assert.equal(e.stderr, 'oops\n')
    return true
  })
})

test('streamed output arrives through callbacks', async () => {
  const sbx = await sandbox()
  const chunks = []
  await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.05; done', { onStdout: (d) => chunks.push(d) })
  assert.equal(chunks.join(''), 'line1\nline2\nline3\n')
})

test('files: write, read, list, info, remove', async () => {
  const sbx = await sandbox()
  await sbx.files.write('notes/a.txt', 'alpha')
  assert.equal(await sbx.files.read('notes/a.txt'), 'alpha')
  const entries = await sbx.files.list('notes')
  assert.deepEqual(entries.map((e) => e.name), ['a.txt'])
  const info = await sbx.files.getInfo('notes/a.txt')
  assert.equal(info.path, '/home/user/notes/a.txt')
  assert.equal(info.owner, 'user')
  await sbx.files.remove('notes/a.txt')
  assert.equal(await sbx.files.exists('notes/a.txt'), false)
})

test('multi-file write: missing parents are made for the user; a refused file is an error, not EPIPE', async () => {
  const sbx = await sandbox()
  // Parents the user could not make (in /) are made for it, as E2B's agent does.
  await sbx.files.write([
    { path: '/0/a.txt', data: 'a' },
    { path: '/0/b/c.txt', data: 'c' },
  ])
  assert.equal(await sbx.files.read('/0/b/c.txt'), 'c')
  const owner = await sbx.commands.run('stat -c %U /0 /0/b /0/b/c.txt')
  assert.equal(owner.stdout, 'user\nuser\nuser\n')
  // A part the user may not write (an existing root-owned directory), after a large one: the SDK gets envd's 403
  // answer (a connection reset would surface as EPIPE / "other side closed").
  const big = 'x'.repeat(8 * 1024 * 1024)
  await assert.rejects(
    sbx.files.write([
      { path: '/etc/refused.txt', data: 'no' },
      { path: '/home/user/big.txt', data: big },
    ]),
    (e) => {
      assert.doesNotMatch(String(e), /EPIPE|ECONNRESET|other side closed/)
      assert.match(String(e), /permission denied|403/i)
      return true
    },
  )
})

test('list finds the sandbox by metadata; getInfo; kill', async () => {
  const sbx = await sandbox({ metadata: { probe: 'js-list' } })
  const paginator = Sandbox.list({ query: { metadata: { probe: 'js-list' } } })
  const items = await paginator.nextItems()
  assert.deepEqual(items.map((s) => s.sandboxId), [sbx.sandboxId])
  const info = await sbx.getInfo()
  assert.equal(info.state, 'running')
  assert.equal(await sbx.isRunning(), true)
  assert.equal(await sbx.kill(), true)
  assert.equal(await sbx.isRunning(), false)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
})

test('pause and resume keep files and processes', async () => {
  const sbx = await sandbox()
  await sbx.files.write('keep.txt', 'kept')
  await sbx.commands.run('sleep 1000', { background: true })
  assert.equal(await sbx.pause(), true)
  assert.equal(await sbx.isRunning(), false)
  const resumed = await Sandbox.connect(sbx.sandboxId)
  assert.equal(await resumed.files.read('keep.txt'), 'kept')
  const ps = await resumed.commands.list()
  assert.ok(ps.some((p) => p.args.join(' ').includes('sleep 1000')), JSON.stringify(ps))
})

test('unknown template and unknown sandbox', async () => {
  await assert.rejects(Sandbox.create('no-such-template'))
  await assert.rejects(Sandbox.connect('nosuchsandbox0000000'), NotFoundError)
})
