// A raw WebSocket client: exact frames out, exact frames in, both serializers.
//
// Every received frame is decoded into a message {join_ref, ref, topic, event,
// payload} (V1 frames have no join_ref: it is left undefined) and kept together with
// its exact form: `json` (the parsed text frame) or `bytes` (a binary frame). The
// client also keeps, per topic, the presence it has been told about, merged the way
// phoenix.js merges it (diffs that arrive before the first presence_state are held
// back and applied right after it), so cases can accept every order Phoenix allows.
"use strict";
const WebSocket = require("ws");
const { WS_MOUNT } = require("./config");

const WAIT = 6000;

function wsUrl(query) {
  return `${WS_MOUNT}/websocket${query ? "?" + query : ""}`;
}

// ---- V2 binary frames ------------------------------------------------------------

/** A client push (kind 0): 00 | jr | r | t | e | join_ref | ref | topic | event | data. */
function binaryPush(joinRef, ref, topic, event, data) {
  const f = [joinRef || "", ref || "", topic, event].map((s) => Buffer.from(s, "utf8"));
  for (const b of f) if (b.length > 255) throw new Error("field over 255 bytes");
  return Buffer.concat([Buffer.from([0, f[0].length, f[1].length, f[2].length, f[3].length]), ...f, Buffer.from(data)]);
}

/** The server's binary reply (kind 1) as the protocol defines it, for exact comparison. */
function binaryReply(joinRef, ref, topic, status, data) {
  const f = [joinRef || "", ref || "", topic, status].map((s) => Buffer.from(s, "utf8"));
  return Buffer.concat([Buffer.from([1, f[0].length, f[1].length, f[2].length, f[3].length]), ...f, Buffer.from(data)]);
}

/** Decodes a server binary frame (kinds 0, 1, 2) into a message; throws if malformed. */
function decodeBinary(buf) {
  const kind = buf[0];
  const take = (sizes, start) => {
    let at = start;
    return sizes.map((n) => {
      if (at + n > buf.length) throw new Error("binary frame shorter than its header says");
      const s = buf.subarray(at, at + n).toString("utf8");
      at += n;
      return s;
    }).concat([buf.subarray(at)]);
  };
  const nul = (s) => (s === "" ? null : s);
  if (kind === 0) {
    const [jr, topic, event, data] = take([buf[1], buf[2], buf[3]], 4);
    return { join_ref: nul(jr), ref: null, topic, event, payload: data, kind };
  }
  if (kind === 1) {
    const [jr, ref, topic, status, data] = take([buf[1], buf[2], buf[3], buf[4]], 5);
    return { join_ref: nul(jr), ref: nul(ref), topic, event: "phx_reply", payload: { status, response: data }, kind };
  }
  if (kind === 2) {
    const [topic, event, data] = take([buf[1], buf[2]], 3);
    return { join_ref: null, ref: null, topic, event, payload: data, kind };
  }
  throw new Error("unknown binary kind " + kind);
}

// ---- serializers ---------------------------------------------------------------

const V2 = {
  vsn: "2.0.0",
  encode: (m) => JSON.stringify([m.join_ref ?? null, m.ref ?? null, m.topic, m.event, m.payload]),
  decode: (v) => {
    if (!Array.isArray(v) || v.length !== 5) throw new Error("not a V2 frame: " + JSON.stringify(v));
    const [join_ref, ref, topic, event, payload] = v;
    return { join_ref, ref, topic, event, payload };
  },
  /** The exact JSON a server sends for a message. */
  wire: (m) => [m.join_ref ?? null, m.ref ?? null, m.topic, m.event, m.payload],
};

const V1 = {
  vsn: "1.0.0",
  // Classic V1 clients send no join_ref; neither do we (the server then keeps a null
  // join_ref for the channel, f18).
  encode: (m) => JSON.stringify({ topic: m.topic, event: m.event, payload: m.payload, ref: m.ref ?? null }),
  decode: (v) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not a V1 frame: " + JSON.stringify(v));
    return { join_ref: undefined, ref: v.ref, topic: v.topic, event: v.event, payload: v.payload };
  },
  /** V1 servers never write join_ref; pushes, broadcasts, phx_close and phx_error carry ref null. */
  wire: (m) => ({ topic: m.topic, event: m.event, payload: m.payload, ref: m.ref ?? null }),
};

const SERIALIZERS = { "1.0.0": V1, "2.0.0": V2 };

// ---- presence merging (the phoenix.js rules, our own code) --------------------------

function applyDiff(state, diff) {
  const next = { ...state };
  for (const [key, p] of Object.entries(diff.joins || {})) {
    const joinedRefs = new Set(p.metas.map((m) => m.phx_ref));
    const kept = (next[key] ? next[key].metas : []).filter((m) => !joinedRefs.has(m.phx_ref));
    next[key] = { ...p, metas: kept.concat(p.metas) };
  }
  for (const [key, p] of Object.entries(diff.leaves || {})) {
    if (!next[key]) continue;
    const leftRefs = new Set(p.metas.map((m) => m.phx_ref));
    const metas = next[key].metas.filter((m) => !leftRefs.has(m.phx_ref));
    if (metas.length) next[key] = { ...next[key], metas }; else delete next[key];
  }
  return next;
}

// ---- the client ------------------------------------------------------------------

class Raw {
  /**
   * Opens a connection. `query` is the whole query string (default "vsn=2.0.0").
   * Rejects with err.status set when the upgrade is answered with an HTTP status.
   */
  static open(query = "vsn=2.0.0", headers = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(query), { headers, handshakeTimeout: WAIT });
      const raw = new Raw(ws, query);
      ws.once("open", () => resolve(raw));
      ws.once("unexpected-response", (req, res) => {
        res.resume();
        req.destroy();
        reject(Object.assign(new Error("upgrade answered HTTP " + res.statusCode), { status: res.statusCode }));
      });
      ws.once("error", reject);
    });
  }

  /** Opens and returns "open", or the HTTP status the upgrade was refused with. */
  static async status(query, headers = {}) {
    try {
      const r = await Raw.open(query, headers);
      r.close();
      return "open";
    } catch (e) {
      if (e.status) return e.status;
      throw e;
    }
  }

  constructor(ws, query) {
    this.ws = ws;
    const vsn = new URLSearchParams(query).get("vsn") || "1.0.0";
    this.ser = SERIALIZERS[vsn] || V2;
    this.frames = [];
    this.cursor = 0;
    this.listeners = new Set();
    this.closed = null; // {code, reason} once closed
    this.presences = new Map(); // topic -> {state: obj|null, pending: []}
    this.stateCount = new Map(); // topic -> number of presence_state frames
    this.eventCount = new Map(); // event -> number of frames received with it
    ws.on("error", () => { /* reported through close */ });
    ws.on("message", (data, isBinary) => this._receive(Buffer.from(data), isBinary));
    ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this._notify();
    });
  }

  get vsn() { return this.ser.vsn; }

  _receive(buf, isBinary) {
    const f = isBinary ? { bytes: buf } : { text: buf.toString("utf8") };
    try {
      if (isBinary) f.msg = decodeBinary(buf);
      else { f.json = JSON.parse(f.text); f.msg = this.ser.decode(f.json); }
    } catch (e) {
      f.error = e.message;
    }
    this.frames.push(f);
    if (f.msg) this.eventCount.set(f.msg.event, (this.eventCount.get(f.msg.event) || 0) + 1);
    if (f.msg && !isBinary) this._trackPresence(f.msg);
    this._notify();
  }

  _trackPresence(m) {
    if (m.event === "presence_state") {
      const p = this.presences.get(m.topic) || { state: null, pending: [] };
      let state = JSON.parse(JSON.stringify(m.payload));
      for (const d of p.pending) state = applyDiff(state, d);
      this.presences.set(m.topic, { state, pending: [] });
      this.stateCount.set(m.topic, (this.stateCount.get(m.topic) || 0) + 1);
    } else if (m.event === "presence_diff") {
      const p = this.presences.get(m.topic) || { state: null, pending: [] };
      if (p.state === null) p.pending.push(m.payload); else p.state = applyDiff(p.state, m.payload);
      this.presences.set(m.topic, p);
    }
  }

  _notify() { for (const l of [...this.listeners]) l(); }

  /** Waits until fn() returns something truthy (checked on every frame and on close). */
  waitFor(fn, ms = WAIT, what = "condition") {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try { v = fn(); } catch (e) { finish(); reject(e); return true; }
        if (v) { finish(); resolve(v); return true; }
        return false;
      };
      const timer = setTimeout(() => { finish(); reject(new Error(`timed out after ${ms} ms waiting for ${what}` + this._tail())); }, ms);
      const finish = () => { clearTimeout(timer); this.listeners.delete(check); };
      if (!check()) this.listeners.add(check);
    });
  }

  _tail() {
    const last = this.frames.slice(-4).map((f) => f.text || (f.bytes && "<binary " + f.bytes.toString("hex") + ">"));
    return `; last frames: ${JSON.stringify(last)}${this.closed ? `; closed ${this.closed.code}` : ""}`;
  }

  /** How many frames with this event arrived so far (cheap to poll in waitFor). */
  count(event) { return this.eventCount.get(event) || 0; }

  // -- sending

  /** Sends a message through this connection's serializer. */
  send(joinRef, ref, topic, event, payload = {}) {
    this.ws.send(this.ser.encode({ join_ref: joinRef, ref, topic, event, payload }));
  }

  sendText(text) { this.ws.send(text); }
  sendBinary(buf) { this.ws.send(buf, { binary: true }); }

  /** Terminates the TCP connection (no close handshake). */
  close() { try { this.ws.terminate(); } catch (_) { /* gone already */ } }

  // -- receiving in order

  /** The next frame in arrival order: {text, json, msg} or {bytes, msg}; rejects on close or timeout. */
  async next(ms = WAIT) {
    await this.waitFor(() => this.cursor < this.frames.length || this.closed, ms, "a frame");
    if (this.cursor < this.frames.length) return this.frames[this.cursor++];
    throw new Error(`connection closed (${this.closed.code}) while waiting for a frame`);
  }

  /** The next frame's exact text, as the server wrote it (fails on a binary frame). */
  async text(ms = WAIT) {
    const f = await this.next(ms);
    if (f.text === undefined) throw new Error("expected a text frame, got binary " + f.bytes.toString("hex"));
    return f.text;
  }

  /** The next frame's parsed JSON (fails on a binary frame). */
  async json(ms = WAIT) {
    const f = await this.next(ms);
    if (f.json === undefined) throw new Error("expected a text frame, got " + (f.bytes ? "binary" : f.text));
    return f.json;
  }

  /** Skips frames until one matching pred(msg, frame); returns that frame. */
  async nextWhere(pred, ms = WAIT, what = "a matching frame") {
    const deadline = Date.now() + ms;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${ms} ms` + this._tail());
      let f;
      try { f = await this.next(left); } catch (e) { throw new Error(`${e.message} (waiting for ${what})` + this._tail()); }
      if (f.msg && pred(f.msg, f)) return f;
    }
  }

  /** Skips frames until one with this event (and topic, when given); returns its exact JSON. */
  async event(event, topic, ms = WAIT) {
    const f = await this.nextWhere((m) => m.event === event && (topic === undefined || m.topic === topic), ms, `${event}${topic ? " on " + topic : ""}`);
    return f.json !== undefined ? f.json : f.msg;
  }

  /** Skips frames until the reply to `ref`; returns its exact JSON. */
  async reply(ref, ms = WAIT) {
    const f = await this.nextWhere((m) => m.event === "phx_reply" && m.ref === ref, ms, `the reply to ref ${ref}`);
    return f.json !== undefined ? f.json : f.msg;
  }

  /** True when no frame (that pred accepts) arrives within ms. Consumes what arrives. */
  async silent(ms = 300, pred = () => true) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      let f;
      try { f = await this.next(Math.max(1, deadline - Date.now())); } catch (_) { return true; }
      if (!f.msg || pred(f.msg)) return false;
    }
    return true;
  }

  /** The close code, once the server closes the connection. */
  async closeCode(ms = WAIT) {
    await this.waitFor(() => this.closed, ms, "the connection to close");
    return this.closed.code;
  }

  /** The exact JSON a server sends for message m on this connection's serializer. */
  wire(m) { return this.ser.wire(m); }

  /** Joins `topic` and returns the reply's exact JSON. */
  async join(joinRef, topic, payload = {}, ms = WAIT) {
    this.send(joinRef, joinRef, topic, "phx_join", payload);
    return this.reply(joinRef, ms);
  }

  /** Joins and fails unless the reply is ok. */
  async joinOk(joinRef, topic, payload = {}, ms = WAIT) {
    const r = await this.join(joinRef, topic, payload, ms);
    const m = this.ser.decode(r);
    if (m.payload.status !== "ok") throw new Error(`join of ${topic} failed: ${JSON.stringify(r)}`);
    return r;
  }

  // -- presence

  /** What this client knows of `topic`'s presence (null until a presence_state arrived). */
  presence(topic) {
    const p = this.presences.get(topic);
    return p ? p.state : null;
  }

  /** Waits until the merged presence of topic satisfies pred(state). */
  presenceWhere(topic, pred, ms = WAIT, what = "presence condition") {
    return this.waitFor(() => { const s = this.presence(topic); return s && pred(s) ? s : false; }, ms, what);
  }

  /** Every presence_diff payload received so far on topic (in order). */
  diffs(topic) {
    return this.frames.filter((f) => f.msg && f.msg.topic === topic && f.msg.event === "presence_diff").map((f) => f.msg.payload);
  }

  /** Waits for a presence_diff on topic satisfying pred (looking at every diff so far). */
  diffWhere(topic, pred, ms = WAIT, what = "presence_diff") {
    return this.waitFor(() => this.diffs(topic).find(pred), ms, what);
  }
}

/** Opens a raw client for the case and closes it when the case ends. */
async function openRaw(t, query = "vsn=2.0.0", headers = {}) {
  const c = await Raw.open(query, headers);
  t.after(() => c.close());
  return c;
}

module.exports = { Raw, openRaw, wsUrl, binaryPush, binaryReply, decodeBinary, V1, V2, SERIALIZERS, WAIT };
