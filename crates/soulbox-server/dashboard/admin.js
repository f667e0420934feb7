// Templates and their builds (with the build log as it arrives), nodes with their health, and the team's API
// keys. Nodes and other teams' keys need an admin key; a member key sees the server's 403 message instead.

import { api, seg } from "./api.js";
import { h, replace } from "./dom.js";

const table = (headers, rows, empty) => h("table", {},
  h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
  h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty))));

export async function templatesPage(view, _params, ctx) {
  const holder = h("div", {});
  replace(view, h("h1", {}, "Templates"), holder);
  const load = async () => {
    const list = await api("GET", "/templates");
    replace(holder, table(["Template", "Names", "Last build", "Status", "CPU / RAM", "Spawned", "Updated"],
      list.map((t) => h("tr", { "data-template": t.templateID },
        h("td", { class: "mono" }, t.templateID),
        h("td", {}, (t.names ?? t.aliases ?? []).join(", ")),
        h("td", { class: "mono" }, t.buildID
          ? h("a", { href: `#/build/${seg(t.templateID)}/${seg(t.buildID)}` }, t.buildID) : ""),
        h("td", {}, t.buildStatus ?? ""),
        h("td", {}, `${t.cpuCount} vCPU / ${t.memoryMB} MiB`),
        h("td", {}, String(t.spawnCount ?? "")),
        h("td", { class: "muted" }, t.updatedAt ?? ""))), "No templates."));
  };
  await load();
  const poll = setInterval(() => load().catch(ctx.handle), 5000);
  return () => clearInterval(poll);
}

/** One build: status and its log, polled with logsOffset so each line arrives once. */
export async function buildPage(view, [template, build], ctx) {
  const status = h("span", { id: "build-status" });
  const log = h("pre", { class: "log", id: "build-log" });
  const reason = h("p", { class: "error" });
  replace(view, h("p", {}, h("a", { href: "#/templates" }, "← Templates")),
    h("h1", {}, "Build ", h("span", { class: "mono" }, build)),
    h("p", {}, "Template ", h("code", {}, template), " — ", status), reason, log);
  let offset = 0, timer = null, stopped = false;
  const poll = async () => {
    try {
      const info = await api("GET",
        `/templates/${seg(template)}/builds/${seg(build)}/status?logsOffset=${offset}&limit=100`);
      const lines = info.logs ?? [];
      offset += lines.length;
      if (lines.length) {
        log.append(document.createTextNode(lines.join("\n") + "\n"));
        log.scrollTop = log.scrollHeight;
      }
      status.textContent = info.status;
      if (info.reason?.message) reason.textContent = info.reason.message;
      const finished = info.status === "ready" || info.status === "error";
      // A full page means more lines wait: ask again at once.
      if (!stopped && (!finished || lines.length === 100)) timer = setTimeout(poll, lines.length === 100 ? 0 : 1000);
    } catch (e) {
      ctx.handle(e);
      if (!stopped) timer = setTimeout(poll, 3000);
    }
  };
  await poll();
  return () => { stopped = true; clearTimeout(timer); };
}

export async function nodesPage(view, _params, ctx) {
  const holder = h("div", {});
  replace(view, h("h1", {}, "Nodes"), holder);
  const load = async () => {
    let nodes;
    try {
      nodes = await api("GET", "/nodes");
    } catch (e) {
      if (e.status !== 403) throw e;
      replace(holder, h("p", { class: "muted" }, "Nodes are shown to admin keys only."));
      return;
    }
    replace(holder, table(["Node", "Status", "Health", "Sandboxes", "CPU free", "Memory free", "Last heartbeat",
      "Version"], nodes.map((n) => h("tr", { "data-node": n.nodeID },
      h("td", { class: "mono" }, n.nodeID),
      h("td", {}, n.draining ? `${n.status} (draining)` : n.status),
      h("td", { class: n.trouble ? "error" : "" }, n.trouble || `ok, checked ${n.lastHealthCheck ?? "?"}`),
      h("td", {}, String(n.sandboxCount)),
      h("td", {}, `${n.cpuAvailable} of ${n.cpuCount}`),
      h("td", {}, `${n.memoryAvailableMB} of ${n.memoryMB} MiB`),
      h("td", { class: "muted" }, n.lastHeartbeat ?? "(in process)"),
      h("td", {}, n.version ?? ""))), "No nodes."));
  };
  await load();
  const poll = setInterval(() => load().catch(ctx.handle), 5000);
  return () => clearInterval(poll);
}

export async function keysPage(view, _params, ctx) {
  const teams = h("div", {});
  const keys = h("div", {});
  const created = h("div", {});
  const name = h("input", { id: "new-key-name", placeholder: "key name", required: true });
  const form = h("form", { class: "toolbar", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const key = await api("POST", "/api-keys", { name: name.value.trim() });
      name.value = "";
      // Shown once, like the CLI does: the server keeps only a hash.
      replace(created, h("p", { class: "secret" }, `New key ${key.name}: `, h("code", {}, key.key),
        " — copy it now; it is not shown again."));
      await load();
    } catch (e) {
      ctx.handle(e);
    }
  } }, name, h("button", { type: "submit" }, "Create key"));
  replace(view, h("h1", {}, "Team"), teams, h("h2", {}, "API keys"), form, created, keys);
  const load = async () => {
    const [teamList, keyList] = await Promise.all([api("GET", "/teams"), api("GET", "/api-keys")]);
    replace(teams, table(["Team", "ID", "Default"], teamList.map((t) => h("tr", {},
      h("td", {}, t.name), h("td", { class: "mono" }, t.teamID), h("td", {}, t.isDefault ? "yes" : ""))), ""));
    replace(keys, table(["Name", "Key", "Role", "Created", "Last used", ""], keyList.map((k) => h("tr", {},
      h("td", {}, k.name),
      h("td", { class: "mono" }, k.mask ? `${k.mask.prefix ?? ""}${k.mask.maskedValuePrefix ?? ""}…${k.mask.maskedValueSuffix ?? ""}` : ""),
      h("td", {}, k.role ?? ""),
      h("td", { class: "muted" }, k.createdAt ?? ""),
      h("td", { class: "muted" }, k.lastUsed ?? "never"),
      h("td", {}, h("button", { type: "button", onclick: async () => {
        if (!window.confirm(`Revoke key ${k.name}? Clients using it stop working.`)) return;
        try { await api("DELETE", `/api-keys/${seg(k.id)}`); await load(); } catch (e) { ctx.handle(e); }
      } }, "Revoke")))), "No keys."));
  };
  await load();
}
