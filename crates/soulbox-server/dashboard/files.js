// The file browser: envd's filesystem.Filesystem/ListDir and Stat (Connect, unary) to browse, GET /files to
// download (a blob saved through a temporary object URL), POST /files (raw bytes, path in the query) to upload.

import { h, replace, bytes } from "./dom.js";
import { rpc, envdFetch } from "./envd.js";

const parentOf = (p) => (p.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || "/");
const join = (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`;

export function filesPanel(sb, ctx) {
  const pathLabel = h("code", { id: "files-path" });
  const list = h("tbody", { id: "files" });
  const upload = h("input", { type: "file", id: "upload", "aria-label": "upload a file" });
  const note = h("span", { class: "muted", id: "files-note" });
  const element = h("div", {},
    h("div", { class: "toolbar" },
      h("button", { type: "button", onclick: () => go(parentOf(cwd)) }, "Up"), pathLabel,
      h("button", { type: "button", onclick: () => go(cwd) }, "Refresh")),
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Size", "Modified"].map((t) => h("th", {}, t)))), list),
    h("div", { class: "toolbar" }, h("label", { for: "upload" }, "Upload into this directory:"), upload, note));
  let cwd = "~";

  async function go(dir) {
    try {
      const { entries = [] } = await rpc(sb, "filesystem.Filesystem/ListDir", { path: dir, depth: 1 });
      if (dir === "~") {
        const { entry } = await rpc(sb, "filesystem.Filesystem/Stat", { path: "~" });
        dir = entry.path;
      }
      cwd = dir;
      pathLabel.textContent = cwd;
      entries.sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === "FILE_TYPE_DIRECTORY" ? -1 : 1));
      replace(list, entries.map((e) => {
        const isDir = e.type === "FILE_TYPE_DIRECTORY";
        const link = h("a", { href: "#", "data-file": e.name, onclick: (ev) => {
          ev.preventDefault();
          if (isDir) go(e.path); else download(e.path, e.name);
        } }, isDir ? `${e.name}/` : e.name);
        return h("tr", {}, h("td", { class: "mono" }, link), h("td", {}, isDir ? "" : bytes(e.size)),
          h("td", { class: "muted" }, e.modifiedTime ?? ""));
      }));
    } catch (e) {
      ctx.handle(e);
    }
  }

  async function download(path, name) {
    try {
      const response = await envdFetch(sb, `/files?path=${encodeURIComponent(path)}`);
      const url = URL.createObjectURL(await response.blob());
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      ctx.handle(e);
    }
  }

  upload.addEventListener("change", async () => {
    const file = upload.files?.[0];
    if (!file) return;
    const target = join(cwd, file.name);
    note.textContent = `uploading ${file.name}…`;
    try {
      await envdFetch(sb, `/files?path=${encodeURIComponent(target)}`, {
        method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
      });
      note.textContent = `uploaded ${target} (${bytes(file.size)})`;
      upload.value = "";
      await go(cwd);
    } catch (e) {
      note.textContent = "";
      ctx.handle(e);
    }
  });

  go(cwd);
  return { element, stop: () => {} };
}
