// The web dashboard in a real headless Chromium (Debian's /usr/bin/chromium through playwright-core) against a
// running soulbox server: sign-in, the sandbox list (an XSS payload in metadata stays text), lifecycle buttons,
// the live metrics chart, the terminal (PTY over envd's Connect protocol), upload and download, a build log
// arriving, nodes and keys. Environment: SOULBOX_URL, SOULBOX_API_KEY (an admin key), CHROMIUM (optional path).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const URL_ = process.env.SOULBOX_URL;
const KEY = process.env.SOULBOX_API_KEY;
assert.ok(URL_ && KEY, "set SOULBOX_URL and SOULBOX_API_KEY");
const XSS = `<img src=x onerror="window.__pwned=1">`;

let browser, page, sandboxID;
const created = { sandboxes: [], templates: [] };

async function api(method, path, body) {
  const r = await fetch(URL_ + path, {
    method,
    headers: { "X-API-Key": KEY, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

before(async () => {
  // --no-sandbox: Chromium's own sandbox cannot start as root in CI containers (the page is ours and trusted).
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox"] });
  page = await browser.newPage({ acceptDownloads: true });
  page.on("dialog", (d) => d.accept());
  const made = await api("POST", "/sandboxes", { templateID: "base", timeout: 240, secure: true,
    metadata: { owner: "dashboard-test", note: XSS } });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  sandboxID = made.body.sandboxID;
  created.sandboxes.push(sandboxID);
});

after(async () => {
  await browser?.close();
  for (const id of created.sandboxes) await api("DELETE", `/sandboxes/${id}`);
  for (const id of created.templates) await api("DELETE", `/templates/${id}`);
});

test("the dashboard's responses carry a strict CSP and refuse framing", async () => {
  const r = await fetch(`${URL_}/dashboard/`);
  assert.equal(r.status, 200);
  const csp = r.headers.get("content-security-policy");
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(r.headers.get("x-frame-options"), "DENY");
  assert.equal((await fetch(`${URL_}/dashboard/nope.js`)).status, 404);
});

test("a wrong key is refused; the right one signs in and the key never enters the URL", async () => {
  await page.goto(`${URL_}/dashboard/`);
  await page.fill("#key", "e2b_not_a_key");
  await page.click("#signin-form button");
  await page.waitForSelector("#signin-error:has-text('refused')");
  await page.fill("#key", KEY);
  await page.click("#signin-form button");
  await page.waitForSelector(`tr[data-sandbox="${sandboxID}"]`);
  assert.ok(!page.url().includes(KEY));
  assert.equal(await page.evaluate(() => sessionStorage.getItem("soulbox.apiKey")), KEY);
});

test("the list shows state, template, metadata (markup as text, never run) and time left", async () => {
  const row = page.locator(`tr[data-sandbox="${sandboxID}"]`);
  await assert.doesNotReject(row.locator("td.state:has-text('running')").waitFor());
  const meta = await row.locator("td.meta").textContent();
  assert.ok(meta.includes(`note=${XSS}`), meta);
  assert.equal(await row.locator("img").count(), 0, "metadata was parsed as HTML");
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.match(await row.locator("td.left").textContent(), /^\d+m \d\ds$/);
  assert.ok((await row.textContent()).includes("base"));
});

test("extend, pause and resume from the list", async () => {
  const endBefore = Date.parse((await api("GET", `/sandboxes/${sandboxID}`)).body.endAt);
  const row = page.locator(`tr[data-sandbox="${sandboxID}"]`);
  await row.locator("button[data-action=extend]").click();
  await waitFor(async () => Date.parse((await api("GET", `/sandboxes/${sandboxID}`)).body.endAt) > endBefore + 200_000,
    "extend did not move endAt by ~5 min");
  await row.locator("button[data-action=pause]").click();
  await row.locator("td.state:has-text('paused')").waitFor({ timeout: 60_000 });
  assert.equal((await api("GET", `/sandboxes/${sandboxID}`)).body.state, "paused");
  await row.locator("button[data-action=resume]").click();
  await row.locator("td.state:has-text('running')").waitFor({ timeout: 60_000 });
  assert.equal((await api("GET", `/sandboxes/${sandboxID}`)).body.state, "running");
});

test("the sandbox page's metrics chart updates", async () => {
  await page.goto(`${URL_}/dashboard/#/sandbox/${sandboxID}`);
  const chart = page.locator("svg.chart");
  await waitFor(async () => Number(await chart.getAttribute("data-samples")) >= 2, "no metrics samples");
  const first = Number(await chart.getAttribute("data-samples"));
  const points = await chart.locator("polyline.cpu").getAttribute("points");
  await waitFor(async () => Number(await chart.getAttribute("data-samples")) > first, "the chart did not update");
  assert.notEqual(await chart.locator("polyline.cpu").getAttribute("points"), points);
});

test("typing in the terminal runs the command in the sandbox", async () => {
  const term = page.locator("#terminal");
  await term.and(page.locator("[data-pid]")).waitFor({ timeout: 30_000 });
  await term.click();
  await page.keyboard.type("echo dash-$((6*7)) > /tmp/from-terminal; cat /tmp/from-terminal");
  await page.keyboard.press("Enter");
  // The typed line holds "$((6*7))"; only the shell's output holds "dash-42".
  await waitFor(async () => (await term.textContent()).includes("dash-42"), "no output in the terminal");
});

test("a file uploaded in the browser lands in the sandbox and downloads back", async () => {
  const content = `uploaded by the dashboard test ${Date.now()}\n`;
  await page.locator("#upload").setInputFiles({ name: "dash-upload.txt", mimeType: "text/plain",
    buffer: Buffer.from(content) });
  const link = page.locator('#files a[data-file="dash-upload.txt"]');
  await link.waitFor({ timeout: 20_000 });
  const dir = await page.locator("#files-path").textContent();
  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  assert.equal(download.suggestedFilename(), "dash-upload.txt");
  const chunks = [];
  for await (const c of await download.createReadStream()) chunks.push(c);
  assert.equal(Buffer.concat(chunks).toString(), content);
  // And the shell in the sandbox sees the same bytes.
  const term = page.locator("#terminal");
  await term.click();
  await page.keyboard.type(`wc -c < ${dir}/dash-upload.txt | sed 's/^/size=/'`);
  await page.keyboard.press("Enter");
  await waitFor(async () => (await term.textContent()).includes(`size=${Buffer.byteLength(content)}`),
    "the sandbox does not have the uploaded file");
});

test("kill from the list removes the sandbox", async () => {
  await page.goto(`${URL_}/dashboard/#/sandboxes`);
  const row = page.locator(`tr[data-sandbox="${sandboxID}"]`);
  await row.locator("button[data-action=kill]").click();
  await row.waitFor({ state: "detached", timeout: 30_000 });
  assert.equal((await api("GET", `/sandboxes/${sandboxID}`)).status, 404);
});

test("a template build's log arrives on the build page", async () => {
  const name = `dash-build-${Date.now()}`;
  const made = await api("POST", "/v3/templates", { name });
  assert.equal(made.status, 202, JSON.stringify(made.body));
  const { templateID, buildID } = made.body;
  created.templates.push(templateID);
  const recipe = { fromTemplate: "base", force: true,
    steps: [{ type: "RUN", args: ["echo dash-build-$((40+2)); sleep 2; echo dash-build-done", "root"], force: true }] };
  assert.equal((await api("POST", `/v2/templates/${templateID}/builds/${buildID}`, recipe)).status, 202);
  await page.goto(`${URL_}/dashboard/#/build/${templateID}/${buildID}`);
  const log = page.locator("#build-log");
  await waitFor(async () => (await log.textContent()).includes("dash-build-42"), "the build log did not arrive", 240_000);
  await page.locator("#build-status:has-text('ready')").waitFor({ timeout: 240_000 });
  assert.ok((await log.textContent()).includes("dash-build-done"));
  await page.goto(`${URL_}/dashboard/#/templates`);
  await page.locator(`tr[data-template="${templateID}"]`).waitFor();
});

test("nodes show their health; the team's keys are listed", async () => {
  await page.goto(`${URL_}/dashboard/#/nodes`);
  const node = page.locator("tr[data-node]").first();
  await node.waitFor();
  assert.match(await node.textContent(), /healthy/);
  await page.goto(`${URL_}/dashboard/#/keys`);
  await page.locator("table").nth(1).locator("tbody tr").first().waitFor();
  await page.click("#signout");
  await page.locator("#signin").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("soulbox.apiKey")), null);
});

async function waitFor(check, message, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(message);
}
