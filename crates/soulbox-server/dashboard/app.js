// The single-page app: sign-in, hash routes (#/sandboxes, #/sandbox/<id>, #/templates, #/build/<tpl>/<build>,
// #/nodes, #/keys) and the page lifecycle (each page returns a cleanup that stops its polling and streams).

import { api, session } from "./api.js";
import { replace } from "./dom.js";
import { sandboxList, sandboxPage } from "./sandboxes.js";
import { templatesPage, buildPage, nodesPage, keysPage } from "./admin.js";

const routes = [
  [/^#\/sandboxes$/, sandboxList],
  [/^#\/sandbox\/([a-z0-9]+)$/, sandboxPage],
  [/^#\/templates$/, templatesPage],
  [/^#\/build\/([^/]+)\/([^/]+)$/, buildPage],
  [/^#\/nodes$/, nodesPage],
  [/^#\/keys$/, keysPage],
];

const $ = (id) => document.getElementById(id);
let cleanup = null;
let generation = 0; // a newer render() supersedes a page still loading

function showStatus(message) {
  $("status").textContent = message ?? "";
}

async function render() {
  const mine = ++generation;
  if (cleanup) { cleanup(); cleanup = null; }
  showStatus("");
  const signedIn = Boolean(session.key());
  $("signin").hidden = signedIn;
  $("nav").hidden = !signedIn;
  $("view").hidden = !signedIn;
  if (!signedIn) { $("key").focus(); return; }
  const hash = location.hash || "#/sandboxes";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  }
  // Each render gets its own container: a superseded page that finishes loading late writes into a detached one.
  const view = document.createElement("div");
  replace($("view"), view);
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    const params = m.slice(1).map(decodeURIComponent);
    try {
      const stop = (await page(view, params, { handle, showStatus })) ?? null;
      if (mine === generation) cleanup = stop;
      else if (stop) stop();
    } catch (e) {
      if (mine === generation) handle(e);
    }
    return;
  }
  location.hash = "#/sandboxes";
}

function onUnauthorized() {
  session.signOut();
  $("signin-error").textContent = "The server refused the key (signed out).";
  render();
}

/** A page's failure: 401 signs out, anything else is shown. */
function handle(e) {
  if (e && e.status === 401) onUnauthorized();
  else showStatus(String(e && e.message ? e.message : e));
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  $("signin-error").textContent = "";
  if (!key) return;
  session.signIn(key);
  try {
    // Any authenticated route tells whether the key is good.
    await api("GET", "/teams");
  } catch (e) {
    session.signOut();
    $("signin-error").textContent = e.status === 401 ? "That key was refused." : String(e.message);
    return;
  }
  $("key").value = "";
  if (!location.hash || location.hash === "#/") location.hash = "#/sandboxes"; // renders on hashchange
  else render();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => { session.signOut(); location.hash = ""; render(); });
  window.addEventListener("hashchange", render);
  window.addEventListener("unhandledrejection", (ev) => handle(ev.reason));
  render();
});
