// A sandbox's live metrics: CPU % and memory % of the last WINDOW_S seconds as two SVG polylines, redrawn from
// GET /sandboxes/{id}/metrics every POLL_MS.

import { api, seg } from "./api.js";
import { h, svg, replace, bytes } from "./dom.js";

const WINDOW_S = 300;
const POLL_MS = 2000;
const W = 600, H = 160, PAD = 24;

export function metricsChart(id, ctx) {
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    role: "img", "aria-label": "CPU and memory use", "data-samples": "0" });
  const legend = h("div", { class: "legend" });
  const element = h("div", {}, chart, legend);
  let stopped = false;

  const draw = (samples) => {
    const now = Date.now() / 1000, from = now - WINDOW_S;
    const x = (t) => PAD + ((t - from) / WINDOW_S) * (W - 2 * PAD);
    const y = (pct) => H - PAD - (Math.min(100, Math.max(0, pct)) / 100) * (H - 2 * PAD);
    const line = (cls, pick) => svg("polyline", { class: cls,
      points: samples.map((s) => `${x(s.timestampUnix).toFixed(1)},${y(pick(s)).toFixed(1)}`).join(" ") });
    const grid = [0, 50, 100].flatMap((pct) => [
      svg("line", { class: "axis", x1: PAD, x2: W - PAD, y1: y(pct), y2: y(pct) }),
      svg("text", { x: 2, y: y(pct) + 3 }, `${pct}%`),
    ]);
    replace(chart, grid, svg("text", { x: PAD, y: H - 6 }, `−${WINDOW_S / 60} min`),
      svg("text", { x: W - PAD - 20, y: H - 6 }, "now"),
      line("cpu", (s) => s.cpuUsedPct),
      line("mem", (s) => (s.memTotal > 0 ? (100 * s.memUsed) / s.memTotal : 0)));
    chart.setAttribute("data-samples", String(samples.length));
    const last = samples[samples.length - 1];
    replace(legend, last
      ? [h("span", { class: "cpu" }, `■ CPU ${last.cpuUsedPct.toFixed(1)}% of ${last.cpuCount} vCPU`), "  ",
        h("span", { class: "mem" }, `■ memory ${bytes(last.memUsed)} of ${bytes(last.memTotal)}`), "  ",
        h("span", { class: "muted" }, `disk ${bytes(last.diskUsed)} of ${bytes(last.diskTotal)}`)]
      : h("span", { class: "muted" }, "No samples yet."));
  };

  const poll = async () => {
    if (stopped) return;
    try {
      const start = Math.floor(Date.now() / 1000) - WINDOW_S;
      const samples = await api("GET", `/sandboxes/${seg(id)}/metrics?start=${start}`);
      if (!stopped) draw(Array.isArray(samples) ? samples : []);
    } catch (e) {
      ctx.handle(e);
    }
  };
  poll();
  const timer = setInterval(poll, POLL_MS);
  return { element, stop: () => { stopped = true; clearInterval(timer); } };
}
