// The REST API client. The API key lives in this tab's sessionStorage (gone when the tab closes) and travels only
// in the X-API-Key header to this origin — never in a URL, so it is not in history, logs or Referer headers.

const KEY = "soulbox.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Reads an error body in E2B's {"code","message"} shape (or plain text). */
export async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let message = text || response.statusText;
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === "string") message = body.message;
  } catch { /* not JSON: the text itself */ }
  return new ApiError(response.status, `${response.status}: ${message}`);
}

/** api("GET", "/v2/sandboxes") → parsed JSON (null for an empty body); throws ApiError. */
export async function api(method, path, body) {
  return (await call(method, path, body)).json;
}

/** Every item of a paged GET list (E2B's `limit` + `nextToken` query, `x-next-token` reply header). */
export async function apiPages(path, maxPages = 20) {
  const items = [];
  let token = null;
  for (let i = 0; i < maxPages; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const { json, headers } = await call("GET", token ? `${path}${sep}nextToken=${encodeURIComponent(token)}` : path);
    items.push(...(json ?? []));
    token = headers.get("x-next-token");
    if (!token) break;
  }
  return items;
}

async function call(method, path, body) {
  const headers = { "X-API-Key": session.key() ?? "" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  const text = await response.text();
  return { json: text ? JSON.parse(text) : null, headers: response.headers };
}

/** Path segment escaping for ids that come from the server. */
export const seg = (s) => encodeURIComponent(String(s));
