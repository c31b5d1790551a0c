// Shared helpers: the server URL, a raw WebSocket client with bounded waits, and
// the stock phoenix.js clients (1.8 and 1.7) set up for Node.
"use strict";
const WebSocket = require("ws");

const BASE = (process.env.PHX_URL || "ws://127.0.0.1:4000/socket").replace(/\/$/, "");
const WAIT = 3000;

let counter = 0;
/** A topic no other case uses. */
function uniq(prefix) {
  counter += 1;
  return `${prefix}${process.pid}-${Date.now().toString(36)}-${counter}`;
}

/** The WebSocket URL for a query string. */
function wsUrl(query) {
  return `${BASE}/websocket${query ? "?" + query : ""}`;
}

/** The HTTP base (for long-poll). */
function httpBase() {
  return BASE.replace(/^ws/, "http");
}

/** A raw client: exact frames in, exact frames out. */
class Raw {
  static open(query = "vsn=2.0.0", headers = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(query), { headers });
      const raw = new Raw(ws);
      ws.once("open", () => resolve(raw));
      ws.once("unexpected-response", (req, res) => {
        // With this listener ws leaves the refused request open: close it ourselves.
        res.resume();
        req.destroy();
        reject(Object.assign(new Error("HTTP " + res.statusCode), { status: res.statusCode }));
      });
      ws.once("error", (e) => reject(e));
    });
  }

  /** Resolves with the HTTP status when the upgrade is refused, or "open". */
  static async status(query, headers = {}) {
    try {
      const r = await Raw.open(query, headers);
      r.close();
      return "open";
    } catch (e) {
      return e.status || e.message;
    }
  }

  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    ws.on("message", (data, isBinary) => {
      const frame = isBinary ? { binary: Buffer.from(data) } : { text: data.toString() };
      const w = this.waiters.shift();
      if (w) w(frame); else this.queue.push(frame);
    });
    ws.on("close", (code) => {
      this.closed = code;
      for (const w of this.waiters.splice(0)) w({ closed: code });
    });
  }

  send(text) { this.ws.send(text); }
  sendBinary(buf) { this.ws.send(buf, { binary: true }); }
  close() { try { this.ws.terminate(); } catch (_) { /* already gone */ } }

  /** The next frame: {text}, {binary} or {closed}. */
  next(ms = WAIT) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed !== null) return Promise.resolve({ closed: this.closed });
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new Error("no frame within " + ms + " ms"));
      }, ms);
      const done = (f) => { clearTimeout(t); resolve(f); };
      this.waiters.push(done);
    });
  }

  async text(ms) {
    const f = await this.next(ms);
    if (f.text === undefined) throw new Error("expected a text frame, got " + JSON.stringify(f));
    return f.text;
  }

  async json(ms) { return JSON.parse(await this.text(ms)); }

  /** Frames until one with this event (V2 arrays or V1 objects). */
  async event(event, ms = WAIT) {
    const deadline = Date.now() + ms;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("no " + event + " within " + ms + " ms");
      const f = await this.next(left);
      if (f.closed !== undefined) throw new Error("closed (" + f.closed + ") waiting for " + event);
      if (f.text === undefined) continue;
      const v = JSON.parse(f.text);
      if ((Array.isArray(v) ? v[3] : v.event) === event) return v;
    }
  }

  /** Resolves true when no frame arrives within ms. */
  async silent(ms = 300) {
    try { await this.next(ms); return false; } catch (_) { return true; }
  }

  /** The close code the server sends. */
  async closeCode(ms = WAIT) {
    const deadline = Date.now() + ms;
    for (;;) {
      const f = await this.next(Math.max(1, deadline - Date.now()));
      if (f.closed !== undefined) return f.closed;
    }
  }

  /** Joins (V2) and returns the reply. */
  async join(joinRef, topic, payload = {}) {
    this.send(JSON.stringify([joinRef, joinRef, topic, "phx_join", payload]));
    return this.event("phx_reply");
  }
}

const clients = {
  "1.8": require("phoenix"),
  "1.7": require("phoenix17"),
};

/** A stock Socket of the given generation, connected with `params`. */
function stock(gen, params = {}, opts = {}) {
  const { Socket } = clients[gen];
  const socket = new Socket(BASE, {
    transport: WebSocket,
    params,
    timeout: 2000,
    reconnectAfterMs: () => 50,
    rejoinAfterMs: () => 50,
    ...opts,
  });
  socket.connect();
  return socket;
}

function joined(channel) {
  return new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", resolve)
      .receive("error", (e) => reject(new Error("join error " + JSON.stringify(e))))
      .receive("timeout", () => reject(new Error("join timeout")));
  });
}

/** Pushes and resolves with {status, response}. */
function push(channel, event, payload, timeout = 2000) {
  return new Promise((resolve) => {
    channel.push(event, payload, timeout)
      .receive("ok", (r) => resolve({ status: "ok", response: r }))
      .receive("error", (r) => resolve({ status: "error", response: r }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  });
}

function until(pred, ms = WAIT, what = "condition") {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      let v;
      try { v = pred(); } catch (_) { v = false; }
      if (v) return resolve(v);
      if (Date.now() - start > ms) return reject(new Error("timed out waiting for " + what));
      setTimeout(tick, 10);
    };
    tick();
  });
}

module.exports = { BASE, WAIT, uniq, wsUrl, httpBase, Raw, clients, stock, joined, push, until };
