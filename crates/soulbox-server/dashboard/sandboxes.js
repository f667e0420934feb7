// Sandboxes: the list (state, template, metadata, time left; kill, pause, resume, extend) and one sandbox's page
// (details, live metrics chart, terminal, files).

import { api, apiPages, seg } from "./api.js";
import { h, replace, duration } from "./dom.js";
import { metricsChart } from "./chart.js";
import { terminalPanel } from "./terminal.js";
import { filesPanel } from "./files.js";

const EXTEND_S = 300;

function timeLeft(endAt, state) {
  if (state === "paused") return "paused";
  const end = Date.parse(endAt);
  return Number.isFinite(end) ? duration((end - Date.now()) / 1000) : "";
}

function metadataText(metadata) {
  return Object.entries(metadata ?? {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

/** The lifecycle buttons for one sandbox; `done` runs after an action succeeds. */
function actions(sb, ctx, done) {
  const id = sb.sandboxID;
  const act = (label, fn) => h("button", {
    type: "button",
    "data-action": label.toLowerCase().split(" ")[0],
    onclick: async (ev) => {
      ev.target.disabled = true;
      try { await fn(); await done(); } catch (e) { ctx.handle(e); } finally { ev.target.disabled = false; }
    },
  }, label);
  const list = [];
  if (sb.state === "running") {
    list.push(act("Pause", () => api("POST", `/sandboxes/${seg(id)}/pause`, {})));
    list.push(act(`Extend +${EXTEND_S / 60} min`, async () => {
      // The timeout route sets the time left from now: extend = what is left + EXTEND_S.
      const left = Math.max(0, (Date.parse(sb.endAt) - Date.now()) / 1000);
      await api("POST", `/sandboxes/${seg(id)}/timeout`, { timeout: Math.round(left + EXTEND_S) });
    }));
  } else if (sb.state === "paused") {
    list.push(act("Resume", () => api("POST", `/sandboxes/${seg(id)}/resume`, { timeout: EXTEND_S })));
  }
  list.push(act("Kill", async () => {
    if (!window.confirm(`Kill sandbox ${id}? Its filesystem is deleted.`)) return;
    await api("DELETE", `/sandboxes/${seg(id)}`);
  }));
  return list;
}

export async function sandboxList(view, _params, ctx) {
  const body = h("tbody", { id: "sandboxes" });
  const count = h("span", { class: "muted" });
  replace(view,
    h("h1", {}, "Sandboxes ", count),
    h("table", {},
      h("thead", {}, h("tr", {}, ["Sandbox", "Template", "State", "Metadata", "Time left", "CPU / RAM", ""]
        .map((t) => h("th", {}, t)))),
      body));
  let rows = [];
  const tick = () => {
    for (const { cell, sb } of rows) cell.textContent = timeLeft(sb.endAt, sb.state);
  };
  const load = async () => {
    const list = await apiPages("/v2/sandboxes?state=running,paused");
    list.sort((a, b) => String(b.startedAt).localeCompare(String(a.startedAt)));
    rows = [];
    replace(body, list.length ? list.map((sb) => {
      const cell = h("td", { class: "left" }, timeLeft(sb.endAt, sb.state));
      rows.push({ cell, sb });
      return h("tr", { "data-sandbox": sb.sandboxID },
        h("td", {}, h("a", { href: `#/sandbox/${seg(sb.sandboxID)}`, class: "mono" }, sb.sandboxID)),
        h("td", {}, sb.alias || sb.templateID),
        h("td", { class: `state state-${sb.state}` }, sb.state),
        h("td", { class: "meta" }, metadataText(sb.metadata)),
        cell,
        h("td", {}, `${sb.cpuCount} vCPU / ${sb.memoryMB} MiB`),
        h("td", { class: "actions" }, actions(sb, ctx, load)));
    }) : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No sandboxes.")));
    count.textContent = `(${list.length})`;
  };
  await load();
  const poll = setInterval(() => load().catch(ctx.handle), 3000);
  const clock = setInterval(tick, 1000);
  return () => { clearInterval(poll); clearInterval(clock); };
}

export async function sandboxPage(view, [id], ctx) {
  const sb = await api("GET", `/sandboxes/${seg(id)}`);
  const info = h("table", { class: "info" });
  const left = h("td", {});
  const actionCell = h("div", { class: "toolbar" });
  const showInfo = (s) => {
    replace(info, [
      ["Sandbox", s.sandboxID], ["Template", s.alias ? `${s.alias} (${s.templateID})` : s.templateID],
      ["State", s.state], ["Started", s.startedAt], ["Envd", s.envdVersion],
      ["Resources", `${s.cpuCount} vCPU / ${s.memoryMB} MiB / ${s.diskSizeMB} MiB disk`],
    ].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, v))),
    h("tr", {}, h("th", {}, "Time left"), left),
    h("tr", {}, h("th", {}, "Metadata"), h("td", { class: "meta" }, metadataText(s.metadata))));
    left.textContent = timeLeft(s.endAt, s.state);
    replace(actionCell, actions(s, ctx, refresh));
  };
  let current = sb;
  const refresh = async () => {
    try {
      current = await api("GET", `/sandboxes/${seg(id)}`);
    } catch (e) {
      if (e.status === 404) { location.hash = "#/sandboxes"; return; }
      throw e;
    }
    showInfo(current);
  };
  showInfo(sb);
  const cleanups = [];
  const chart = metricsChart(id, ctx);
  cleanups.push(chart.stop);
  const panels = [h("div", { class: "panel" }, h("h2", {}, "Metrics"), chart.element)];
  if (sb.state === "running") {
    const term = terminalPanel(sb, ctx);
    const files = filesPanel(sb, ctx);
    cleanups.push(term.stop, files.stop);
    panels.push(h("div", { class: "panel" }, h("h2", {}, "Terminal"), term.element));
    panels.push(h("div", { class: "panel" }, h("h2", {}, "Files"), files.element));
  } else {
    panels.push(h("p", { class: "muted" }, "Resume the sandbox for a terminal and its files."));
  }
  replace(view, h("p", {}, h("a", { href: "#/sandboxes" }, "← Sandboxes")),
    h("h1", { class: "mono" }, id), actionCell, info, h("div", { class: "grid" }, panels));
  const clock = setInterval(() => { left.textContent = timeLeft(current.endAt, current.state); }, 1000);
  const poll = setInterval(() => refresh().catch(ctx.handle), 5000);
  return () => { clearInterval(clock); clearInterval(poll); for (const c of cleanups) c(); };
}
