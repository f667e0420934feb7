// A minimal terminal: bash in a PTY started with envd's process.Process/Start (output streamed back as
// data.pty), keystrokes sent with process.Process/SendInput, in order (one request at a time, later keys batched).
// The screen understands \r, \n, backspace, tab, wrapping at COLS, cursor left/right and "erase to end of line";
// other escape sequences are dropped.
// Output is drawn with textContent only.

import { h } from "./dom.js";
import { rpc, stream, toBase64, fromBase64 } from "./envd.js";

const COLS = 100, ROWS = 24, MAX_LINES = 2000;

const KEYS = {
  Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", Delete: "\x1b[3~",
  ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F",
};

/** The text screen: lines, a cursor, and an escape-sequence skipper that survives chunk boundaries. */
class Screen {
  constructor() { this.lines = [""]; this.col = 0; this.esc = ""; }

  write(text) {
    for (const ch of text) {
      if (this.esc) { this.escape(ch); continue; }
      if (ch === "\x1b") { this.esc = ch; continue; }
      if (ch === "\r") { this.col = 0; continue; }
      if (ch === "\n") { this.lines.push(""); this.col = 0; continue; }
      if (ch === "\b") { this.col = Math.max(0, this.col - 1); continue; }
      if (ch === "\t") { this.col = (Math.floor(this.col / 8) + 1) * 8; continue; }
      if (ch < " ") continue;
      // Auto-margin: a character past the last column starts the next line (readline's wrap relies on it).
      if (this.col >= COLS) { this.lines.push(""); this.col = 0; }
      const line = this.lines[this.lines.length - 1].padEnd(this.col);
      this.lines[this.lines.length - 1] = line.slice(0, this.col) + ch + line.slice(this.col + 1);
      this.col++;
    }
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
  }

  escape(ch) {
    this.esc += ch;
    const seq = this.esc;
    if (seq.length === 2 && ch !== "[" && ch !== "]") { this.esc = ""; return; } // ESC x
    if (seq[1] === "]") { // OSC: ends with BEL or ESC \
      if (ch === "\x07" || seq.endsWith("\x1b\\")) this.esc = "";
      return;
    }
    if (seq.length > 2 && ch >= "@" && ch <= "~") { // CSI final byte
      this.esc = "";
      if (ch === "K") {
        const last = this.lines.length - 1;
        this.lines[last] = this.lines[last].slice(0, this.col);
      } else if (ch === "C") {
        this.col += Number(seq.slice(2, -1)) || 1;
      } else if (ch === "D") {
        this.col = Math.max(0, this.col - (Number(seq.slice(2, -1)) || 1));
      }
    }
  }

  text() { return this.lines.join("\n"); }
}

export function terminalPanel(sb, ctx) {
  const screen = new Screen();
  const pre = h("pre", { class: "terminal", tabindex: "0", id: "terminal", "aria-label": "terminal" });
  const state = h("span", { class: "muted" }, "starting…");
  const element = h("div", {}, h("div", { class: "toolbar" }, state), pre);
  const aborter = new AbortController();
  const decoder = new TextDecoder();
  let pid = null, pending = "", sending = false, drawQueued = false;

  const draw = () => {
    drawQueued = false;
    pre.textContent = screen.text();
    pre.scrollTop = pre.scrollHeight;
  };
  const output = (u8) => {
    screen.write(decoder.decode(u8, { stream: true }));
    if (!drawQueued) { drawQueued = true; requestAnimationFrame(draw); }
  };

  const flush = async () => {
    if (sending || pid === null || !pending) return;
    sending = true;
    const data = pending;
    pending = "";
    try {
      await rpc(sb, "process.Process/SendInput",
        { process: { pid }, input: { pty: toBase64(new TextEncoder().encode(data)) } });
    } catch (e) {
      ctx.handle(e);
    } finally {
      sending = false;
    }
    flush();
  };
  const send = (data) => { pending += data; flush(); };

  pre.addEventListener("keydown", (ev) => {
    if (pid === null || ev.metaKey) return;
    let data = KEYS[ev.key];
    if (ev.ctrlKey && ev.key.length === 1) {
      const code = ev.key.toUpperCase().charCodeAt(0);
      if (code >= 64 && code <= 95) data = String.fromCharCode(code - 64);
    } else if (!data && ev.key.length === 1 && !ev.altKey) {
      data = ev.key;
    }
    if (data) { ev.preventDefault(); send(data); }
  });
  pre.addEventListener("paste", (ev) => {
    const text = ev.clipboardData?.getData("text");
    if (text && pid !== null) { ev.preventDefault(); send(text.replace(/\r?\n/g, "\r")); }
  });

  stream(sb, "process.Process/Start", {
    process: { cmd: "/bin/bash", args: ["-i", "-l"], envs: { TERM: "xterm-256color", LANG: "C.UTF-8" } },
    pty: { size: { cols: COLS, rows: ROWS } },
  }, (msg) => {
    const ev = msg.event ?? {};
    if (ev.start) {
      pid = ev.start.pid;
      state.textContent = `bash, pid ${pid} — click here and type`;
      pre.setAttribute("data-pid", String(pid));
      flush();
    } else if (ev.data?.pty) {
      output(fromBase64(ev.data.pty));
    } else if (ev.end) {
      state.textContent = `exited (${ev.end.status ?? ev.end.exitCode ?? ""})`;
      pid = null;
    }
  }, { signal: aborter.signal, headers: { "Keepalive-Ping-Interval": "50" } }).catch((e) => {
    if (!aborter.signal.aborted) { state.textContent = "disconnected"; ctx.handle(e); }
  });

  const stop = () => {
    // Leaving the page ends the shell (closing the stream alone would leave it running).
    if (pid !== null) {
      rpc(sb, "process.Process/SendSignal", { process: { pid }, signal: "SIGNAL_SIGKILL" }).catch(() => {});
    }
    aborter.abort();
  };
  return { element, stop };
}
