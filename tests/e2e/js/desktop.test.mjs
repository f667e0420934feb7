// Issue 16: E2B's Desktop SDK for JavaScript (`@e2b/desktop`, unmodified) against `soulbox server`, the npm twin
// of tests/e2e/test_desktop.py. `Sandbox.create()` starts the template `desktop` (tests/e2e/run.sh builds it
// before the suites, so no create here waits on a build), then the SDK itself starts Xvfb at the resolution it is
// given and an Xfce session, and drives everything through `commands.run` (xdotool, scrot, xrandr, x11vnc,
// noVNC). The stream's URL (`https://6080-<id>.<domain>/vnc.html`) is fetched from the local server with that
// host name in `Host`, so nothing is looked up or sent off the machine.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { request } from 'node:http'
import { connect } from 'node:net'
import { readFileSync } from 'node:fs'
import { Sandbox as Desktop, CommandExitError } from '@e2b/desktop'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY', 'E2B_DOMAIN']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run through tests/e2e/run.sh`)
}
const API_URL = new URL(process.env.E2B_API_URL)
const DOMAIN = process.env.E2B_DOMAIN
const SDK_VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/@e2b/desktop/package.json', import.meta.url), 'utf8'),
).version

// Not the SDK's default (1024x768), so the screenshot's size proves the SDK's resolution is the one used.
const RESOLUTION = [800, 600]
const NOVNC_PORT = 6080
// Under Debian 12's runsc the SDK's Xfce session never comes up (as in test_desktop.py; README).
const SKIP = process.env.SOULBOX_RUNTIME === 'runsc' && 'the desktop session does not start under gVisor yet'

let desk

async function waitUntil(probe, seconds, what) {
  const deadline = Date.now() + seconds * 1000
  for (;;) {
    const value = await probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** The SDK's `getApplicationWindows`, empty while there is none (xdotool then exits 1). */
async function windowsOf(application) {
  try {
    return (await desk.getApplicationWindows(application)).filter(Boolean)
  } catch (e) {
    if (e instanceof CommandExitError) return []
    throw e
  }
}

async function windowsNamed(title) {
  const found = await desk.commands.run(`xdotool search --onlyvisible --name ${title} || true`)
  return found.stdout.split(/\s+/).filter(Boolean)
}

/** Width and height from a PNG's IHDR chunk (the first one, right after the signature). */
function pngSize(png) {
  assert.equal(png.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'the PNG signature')
  assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR')
  return [png.readUInt32BE(16), png.readUInt32BE(20)]
}

async function screenshot() {
  return Buffer.from(await desk.screenshot())
}

/** A GET to the local server with `Host: host` (the URL's own host name is never resolved). */
function getThroughServer(host, path) {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: API_URL.hostname, port: API_URL.port, path, headers: { Host: host }, timeout: 30_000 },
      (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }))
      },
    )
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)))
    req.on('error', reject)
    req.end()
  })
}

/**
 * Opens noVNC's websocket (`/websockify`) through the server's proxy with `Host: host` and reads the VNC
 * server's greeting and the security types it offers (RFB 3.8).
 */
function rfbSecurityTypesOverWebsocket(host) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: API_URL.hostname, port: Number(API_URL.port) })
    socket.setTimeout(30_000, () => socket.destroy(new Error('the websocket did not answer in 30 s')))
    socket.on('error', reject)
    let buffered = Buffer.alloc(0)
    let upgraded = false
    let greeted = false
    const sendFrame = (payload) => {
      // a client frame is masked; binary, final, length < 126
      const mask = randomBytes(4)
      const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))
      socket.write(Buffer.concat([Buffer.from([0x82, 0x80 | payload.length]), mask, masked]))
    }
    const nextFrame = () => {
      if (buffered.length < 2) return null
      assert.equal(buffered[1] & 0x80, 0, 'a server frame must not be masked')
      let length = buffered[1] & 0x7f
      let start = 2
      if (length === 126) {
        if (buffered.length < 4) return null
        length = buffered.readUInt16BE(2)
        start = 4
      }
      if (buffered.length < start + length) return null
      const payload = buffered.subarray(start, start + length)
      buffered = buffered.subarray(start + length)
      return payload
    }
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk])
      try {
        if (!upgraded) {
          const end = buffered.indexOf('\r\n\r\n')
          if (end < 0) return
          const status = buffered.subarray(0, buffered.indexOf('\r\n')).toString('latin1')
          assert.match(status, / 101 /)
          buffered = buffered.subarray(end + 4)
          upgraded = true
        }
        for (let frame = nextFrame(); frame; frame = nextFrame()) {
          if (!greeted) {
            assert.match(frame.toString('latin1'), /^RFB 003\./)
            greeted = true
            sendFrame(Buffer.from('RFB 003.008\n'))
          } else {
            socket.end()
            resolve([...frame.subarray(1, 1 + frame[0])])
            return
          }
        }
      } catch (e) {
        socket.destroy()
        reject(e)
      }
    })
    const key = randomBytes(16).toString('base64')
    socket.write(
      `GET /websockify HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n`,
    )
  })
}

describe(`@e2b/desktop ${SDK_VERSION}`, { skip: SKIP }, () => {
  before(async () => {
    desk = await Desktop.create({
      resolution: RESOLUTION,
      timeoutMs: 600_000,
      // a cold first use builds the template (apt from the Debian mirror): longer than the default 60 s
      requestTimeoutMs: 1_800_000,
      metadata: { suite: 'js-desktop', sdk: SDK_VERSION },
    })
  })
  after(async () => {
    if (desk) await desk.kill().catch(() => {})
  })

  test('a screenshot is a PNG of the configured size', async () => {
    const shot = await screenshot()
    assert.deepEqual(pngSize(shot), RESOLUTION)
    assert.equal(shot.subarray(-8).toString('hex'), '49454e44ae426082', 'a complete PNG ends with IEND')
    assert.deepEqual(await desk.getScreenSize(), { width: RESOLUTION[0], height: RESOLUTION[1] })
    // the screenshot's temporary file is removed (the JS SDK does not wait for the removal)
    await waitUntil(
      async () => (await desk.commands.run("ls /tmp | grep -c '^screenshot-' || true")).stdout.trim() === '0',
      10,
      'the screenshot file removed',
    )
  })

  test('the mouse moves and a click reaches the window under it', async () => {
    const events = `/tmp/xev-${randomBytes(4).toString('hex')}.log`
    // xev draws a window at a known place and prints every event it gets
    await desk.commands.run(`xev -geometry 300x200+50+60 -name soulbox-xev > ${events}`, {
      background: true,
      timeoutMs: 0,
    })
    // xev sets no WM_CLASS for the SDK's getApplicationWindows to find: by its title
    await waitUntil(async () => (await windowsNamed('soulbox-xev')).length > 0, 30, 'the xev window')
    const before = await screenshot()

    await desk.moveMouse(150, 140)
    assert.deepEqual(await desk.getCursorPosition(), { x: 150, y: 140 })
    await desk.leftClick()
    await desk.doubleClick(170, 150)
    assert.deepEqual(await desk.getCursorPosition(), { x: 170, y: 150 })

    const log = await waitUntil(
      async () => {
        const text = await desk.files.read(events)
        return text.split('ButtonPress event').length - 1 >= 3 && text
      },
      30,
      "three button presses in xev's log",
    )
    assert.match(log, /button 1,/)
    assert.match(log, /ButtonRelease event/)
    // xev reports the press at the pointer's place on the root window
    assert.match(log, /root:\(170,150\)/)

    // the screen changed: a right click on the desktop opens xfdesktop's menu (and the pointer moved)
    await desk.rightClick(600, 450)
    await waitUntil(async () => !(await screenshot()).equals(before), 30, 'a different screen after the clicks')
    // the menu grabs the keyboard: Escape closes it, so that later keys reach the focused window
    await desk.press('escape')
  })

  test('typed text and keys reach an application', async () => {
    const typed = `/tmp/typed-${randomBytes(4).toString('hex')}.txt`
    const title = `soulbox-typing-${randomBytes(3).toString('hex')}`
    // a terminal whose shell writes the line it reads to a file
    await desk.commands.run(
      `xterm -T ${title} -geometry 60x10+200+200 -e sh -c 'read line; printf %s "$line" > ${typed}'`,
      { background: true, timeoutMs: 0 },
    )
    const [window] = await waitUntil(async () => {
      const found = await windowsOf('xterm')
      return found.length > 0 && found
    }, 30, 'the xterm window')
    assert.equal(await desk.getWindowTitle(window), title)
    // the focus on it, so the keys go there
    await desk.commands.run(`xdotool windowactivate --sync ${window}`)
    await waitUntil(async () => (await desk.getCurrentWindowId()) === window, 30, 'the focus on the xterm')

    const text = 'Hello from @e2b/desktop, 42 & <ok>'
    await desk.write(text, { chunkSize: 25, delayInMs: 10 })
    await desk.press('enter')
    const content = await waitUntil(
      async () => (await desk.commands.run(`cat ${typed} 2>/dev/null || true`)).stdout,
      30,
      'the typed line in the file',
    )
    assert.equal(content, text)
  })

  test('the clipboard and window tools are there', async () => {
    // xclip, which agents use to read what an application copied, against the session's X server
    await desk.commands.run("printf %s 'copied text' | xclip -selection clipboard -i")
    assert.equal((await desk.commands.run('xclip -selection clipboard -o')).stdout, 'copied text')
    assert.match((await desk.commands.run('wmctrl -m')).stdout, /^Name: Xfwm4/)
  })

  test('the stream serves noVNC through the proxy with its auth key', async () => {
    await desk.stream.start({ requireAuth: true })
    try {
      const key = desk.stream.getAuthKey()
      assert.equal(key.length, 16)
      const url = new URL(desk.stream.getUrl({ authKey: key }))
      assert.equal(url.hostname, `${NOVNC_PORT}-${desk.sandboxId}.${DOMAIN}`)
      assert.equal(url.pathname, '/vnc.html')
      assert.equal(url.searchParams.get('password'), key)

      const page = await getThroughServer(url.hostname, url.pathname)
      assert.equal(page.status, 200, page.text)
      assert.match(page.text, /<title>noVNC<\/title>/)
      // the page's own script is served too
      const script = await getThroughServer(url.hostname, '/app/ui.js')
      assert.equal(script.status, 200)
      assert.match(script.text, /RFB/)
      // the websocket reaches x11vnc, which asks for the password (VNC authentication, type 2) and nothing else
      assert.deepEqual(await rfbSecurityTypesOverWebsocket(url.hostname), [2])
    } finally {
      await desk.stream.stop()
    }
  })
})
