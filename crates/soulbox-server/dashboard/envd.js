// envd (the agent inside a sandbox) through this server's sandbox proxy: same origin, routed by the
// E2b-Sandbox-Id / E2b-Sandbox-Port headers, authenticated by the sandbox's envd access token (X-Access-Token,
// from GET /sandboxes/{id}). Connect RPC with the JSON codec: unary calls are plain JSON; server streams are
// envelopes [flags u8][length u32 BE][JSON], the last one (flags & 2) the end of the stream.

import { errorOf } from "./api.js";

const ENVD_PORT = "49983";

export function envdHeaders(sb, extra = {}) {
  const headers = { "E2b-Sandbox-Id": sb.sandboxID, "E2b-Sandbox-Port": ENVD_PORT, ...extra };
  if (sb.envdAccessToken) headers["X-Access-Token"] = sb.envdAccessToken;
  return headers;
}

/** fetch() to envd; throws ApiError unless 2xx. */
export async function envdFetch(sb, path, init = {}) {
  const response = await fetch(path, { ...init, cache: "no-store", headers: envdHeaders(sb, init.headers) });
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** A unary Connect call: rpc(sb, "filesystem.Filesystem/ListDir", {path}) → the JSON reply. */
export async function rpc(sb, method, message) {
  const response = await envdFetch(sb, `/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
    body: JSON.stringify(message),
  });
  return response.json();
}

export const toBase64 = (u8) => {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
};
export const fromBase64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

/**
 * A server-streaming Connect call. Calls onMessage(json) per message; resolves when the stream ends (rejects on
 * an end-stream error). `signal` aborts it.
 */
export async function stream(sb, method, message, onMessage, { signal, headers = {} } = {}) {
  const payload = new TextEncoder().encode(JSON.stringify(message));
  const body = new Uint8Array(5 + payload.length);
  new DataView(body.buffer).setUint32(1, payload.length);
  body.set(payload, 5);
  const response = await envdFetch(sb, `/${method}`, {
    method: "POST",
    signal,
    headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1", ...headers },
    body,
  });
  const reader = response.body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended without its end message");
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
    while (buf.length >= 5) {
      const flags = buf[0];
      const len = new DataView(buf.buffer, buf.byteOffset + 1, 4).getUint32(0);
      if (buf.length < 5 + len) break;
      const json = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + len)) || "{}");
      buf = buf.slice(5 + len);
      if (flags & 2) {
        if (json.error) throw new Error(`${json.error.code}: ${json.error.message ?? ""}`);
        return;
      }
      onMessage(json);
    }
  }
}
