// Raw long-poll over HTTP: the exact protocol, no client library.
"use strict";
const http = require("node:http");
const https = require("node:https");
const { HTTP_MOUNT, LP_WINDOW_MS } = require("./config");

const LP = HTTP_MOUNT + "/longpoll";

/** One HTTP request; resolves with {code, headers, raw, body (parsed JSON or null)}. */
function request(method, url, { body, headers = {}, timeout = LP_WINDOW_MS + 5000 } = {}) {
  const mod = url.startsWith("https:") ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, { method, headers }, (res) => {
      let raw = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { raw += d; });
      res.on("end", () => {
        let parsed = null;
        try { parsed = raw ? JSON.parse(raw) : null; } catch (_) { parsed = undefined; }
        resolve({ code: res.statusCode, headers: res.headers, raw, body: parsed });
      });
    });
    req.setTimeout(timeout, () => req.destroy(new Error(`${method} ${url}: no answer within ${timeout} ms`)));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const withToken = (query, token) => `${LP}?${query}${token ? "&token=" + encodeURIComponent(token) : ""}`;

/** A long-poll session as a raw client sees it. */
class LpSession {
  /** Creates a session (first GET) and checks it was answered 410 with a token. */
  static async create(query = "vsn=2.0.0") {
    const res = await request("GET", `${LP}?${query}`);
    if (res.code !== 200 || !res.body || res.body.status !== 410 || typeof res.body.token !== "string") {
      throw new Error(`session-creating GET answered HTTP ${res.code} ${res.raw}`);
    }
    return new LpSession(query, res.body.token, res);
  }

  constructor(query, token, first) {
    this.query = query;
    this.token = token;
    this.first = first;
    this.received = []; // every frame delivered by polls, parsed
  }

  /** POSTs lines as one ndjson body; resolves with the response. */
  post(lines, contentType = "application/x-ndjson") {
    const body = Array.isArray(lines) ? lines.join("\n") : lines;
    return request("POST", withToken(this.query, this.token), { body, headers: { "content-type": contentType } });
  }

  /** POSTs V2 messages [join_ref, ref, topic, event, payload] as ndjson, checks {"status":200}. */
  async send(...msgs) {
    const res = await this.post(msgs.map((m) => JSON.stringify(m)));
    if (!res.body || res.body.status !== 200) throw new Error(`POST answered ${res.code} ${res.raw}`);
    return res;
  }

  /** One GET poll; resolves with the response (messages are left as the strings sent). */
  poll() {
    return request("GET", withToken(this.query, this.token));
  }

  /**
   * Polls until `pred(received)` holds. A poll returns at once when messages are
   * buffered, so this only waits a full window when what we wait for never comes.
   */
  async pollUntil(pred, what = "messages", maxPolls = 4) {
    for (let i = 0; i < maxPolls; i++) {
      if (pred(this.received)) return this.received;
      const res = await this.poll();
      if (res.code !== 200 || !res.body) throw new Error(`poll answered HTTP ${res.code} ${res.raw}`);
      const { status, messages } = res.body;
      if (status === 200) {
        for (const m of messages) {
          if (typeof m !== "string") throw new Error("a polled message is not a JSON string: " + JSON.stringify(m));
          this.received.push(JSON.parse(m));
        }
      } else if (status !== 204) {
        throw new Error(`poll answered status ${status}: ${res.raw}`);
      }
    }
    if (pred(this.received)) return this.received;
    throw new Error(`no ${what} after ${maxPolls} polls; got ${JSON.stringify(this.received)}`);
  }

  /** Polls until `n` frames arrived in all; returns them. */
  pollCount(n) {
    return this.pollUntil((r) => r.length >= n, `${n} frames`);
  }

  /** Polls until a V2 frame with this ref and event phx_reply arrived; returns it. */
  async reply(ref) {
    await this.pollUntil((r) => r.some((m) => m[1] === ref && m[3] === "phx_reply"), `the reply to ${ref}`);
    return this.received.find((m) => m[1] === ref && m[3] === "phx_reply");
  }
}

module.exports = { LP, request, LpSession, withToken };
