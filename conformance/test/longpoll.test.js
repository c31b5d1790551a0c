// Long-poll: raw HTTP for the exact protocol, then the stock 1.8 client with its
// LongPoll transport and its automatic fallback from WebSocket. Skipped, with the
// reason printed, when the server does not serve <mount>/longpoll (HTTP 404).
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const WebSocket = require("ws");
const { httpBase, uniq, clients, joined, push, until } = require("../lib/harness");

const LP = httpBase() + "/longpoll";
const WINDOW = Number(process.env.LP_WINDOW_MS || 10000);
const T = { timeout: Math.max(10000, WINDOW * 2 + 5000) };

function request(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let data = "";
      res.on("data", (d) => { data += d; });
      res.on("end", () => resolve({ code: res.statusCode, headers: res.headers, body: data ? JSON.parse(data) : null, raw: data }));
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

let available = null;
async function lpAvailable(t) {
  if (available === null) available = (await request("GET", LP + "?vsn=2.0.0")).code !== 404;
  if (!available) t.skip("the server does not serve long-poll at <mount>/longpoll (HTTP 404)");
  return available;
}

async function session(query = "vsn=2.0.0") {
  const res = await request("GET", `${LP}?${query}`);
  assert.equal(res.code, 200);
  assert.equal(res.body.status, 410);
  return res.body.token;
}

const post = (token, lines) => request("POST", `${LP}?vsn=2.0.0&token=${encodeURIComponent(token)}`,
  lines.join("\n"), { "content-type": "application/x-ndjson" });

/** Polls until `count` messages arrived (or fails after a few polls). */
async function pollMessages(token, count) {
  const got = [];
  for (let i = 0; i < 5 && got.length < count; i++) {
    const res = await request("GET", `${LP}?vsn=2.0.0&token=${encodeURIComponent(token)}`);
    assert.equal(res.code, 200);
    if (res.body.status === 200) {
      for (const m of res.body.messages) {
        assert.equal(typeof m, "string", "each message is a JSON string holding a frame");
        got.push(JSON.parse(m));
      }
    } else assert.equal(res.body.status, 204);
  }
  return got;
}

test("[C52][D81][D86] first GET: HTTP 200, body status 410 with a token, JSON and no-store", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const res = await request("GET", LP + "?vsn=2.0.0");
  assert.equal(res.code, 200);
  assert.equal(res.body.status, 410);
  assert.equal(typeof res.body.token, "string");
  assert.match(res.headers["content-type"], /^application\/json/);
  assert.equal(res.headers["cache-control"], "no-store");
  assert.equal(res.headers["access-control-allow-origin"], "*");
});

test("[C53][C54] POST a join, the next poll returns the reply as a frame string", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const token = await session();
  const topic = uniq("private:");
  const res = await post(token, [JSON.stringify(["1", "1", topic, "phx_join", { token: "letmein" }])]);
  assert.deepEqual(res.body, { status: 200 });
  const msgs = await pollMessages(token, 1);
  assert.deepEqual(msgs[0], ["1", "1", topic, "phx_reply", { response: { topic }, status: "ok" }]);
});

test("[C66] an ndjson batch is handled in order", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const token = await session();
  const topic = uniq("private:");
  await post(token, [
    JSON.stringify(["1", "1", topic, "phx_join", { token: "letmein" }]),
    JSON.stringify(["1", "2", topic, "echo", { n: 1 }]),
    JSON.stringify(["1", "3", topic, "echo", { n: 2 }]),
  ]);
  const msgs = await pollMessages(token, 3);
  assert.deepEqual(msgs.map((m) => m[1]), ["1", "2", "3"]);
  assert.deepEqual(msgs[2][4], { response: { n: 2 }, status: "ok" });
});

test("[C55] a poll with nothing to say answers 204 after the window", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const token = await session();
  const res = await request("GET", `${LP}?vsn=2.0.0&token=${encodeURIComponent(token)}`);
  assert.equal(res.body.status, 204);
  assert.equal(res.body.token, token);
  assert.deepEqual(res.body.messages, []);
});

test("[C57][58] a bogus token: POST gets 410, GET opens a new session", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  assert.deepEqual((await post("bogus", ["[]"])).body, { status: 410 });
  const res = await request("GET", `${LP}?vsn=2.0.0&token=bogus`);
  assert.equal(res.body.status, 410);
  assert.notEqual(res.body.token, "bogus");
});

test("[D84][D85] the x-phoenix-longpoll-token header wins over ?token=", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const token = await session();
  const topic = uniq("private:");
  const res = await request("POST", `${LP}?vsn=2.0.0&token=bogus`, JSON.stringify(["1", "1", topic, "phx_join", { token: "letmein" }]),
    { "x-phoenix-longpoll-token": token, "content-type": "application/json" });
  assert.deepEqual(res.body, { status: 200 });
});

test("[C72][contract] reject=1: {\"status\":403}", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const res = await request("GET", `${LP}?vsn=2.0.0&reject=1`);
  assert.equal(res.code, 200);
  assert.deepEqual(res.body, { status: 403 });
});

test("[C79] an unknown vsn: {\"status\":403}", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  assert.deepEqual((await request("GET", `${LP}?vsn=123.1.1`)).body, { status: 403 });
});

test("[54] OPTIONS is a CORS preflight", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const res = await request("OPTIONS", LP, undefined, { "access-control-request-headers": "x-phoenix-longpoll-token" });
  assert.equal(res.code, 200);
  assert.equal(res.headers["access-control-allow-origin"], "*");
  assert.match(res.headers["access-control-allow-methods"], /post/);
});

function lpSocket(params = {}, extra = {}) {
  const { Socket, LongPoll } = clients["1.8"];
  const s = new Socket(httpBase(), { transport: LongPoll, params, timeout: 3000, reconnectAfterMs: () => 50, rejoinAfterMs: () => 50, ...extra });
  s.connect();
  return s;
}

test("[1.8][J199] stock LongPoll: join, echo, broadcast and presence", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const { Presence } = clients["1.8"];
  const topic = uniq("room:");
  const a = lpSocket(), b = lpSocket();
  try {
    const chA = a.channel(topic, { user: "lp-a" }), chB = b.channel(topic, { user: "lp-b" });
    const presence = new Presence(chA);
    assert.deepEqual(await joined(chA), { topic });
    await joined(chB);
    assert.deepEqual(await push(chA, "echo", { over: "longpoll" }), { status: "ok", response: { over: "longpoll" } });
    const got = new Promise((resolve) => chB.on("shout", resolve));
    await push(chA, "shout", { n: 1 });
    assert.deepEqual(await got, { n: 1 });
    await until(() => presence.list((k) => k).sort().join() === "lp-a,lp-b", 5000, "both in presence");
  } finally { a.disconnect(); b.disconnect(); }
});

test("[1.8][51] fallback: a WebSocket that cannot connect falls back to LongPoll", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const { Socket, LongPoll } = clients["1.8"];
  // A WebSocket pointed at a closed port, as behind a proxy that breaks WebSockets.
  class BrokenWebSocket extends WebSocket {
    constructor(_url, protocols) { super("ws://127.0.0.1:9/socket/websocket", protocols); this.on("error", () => {}); }
  }
  const store = new Map();
  const sessionStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  const s = new Socket(httpBase(), { transport: BrokenWebSocket, longPollFallbackMs: 300, sessionStorage, timeout: 3000 });
  s.connect();
  try {
    const ch = s.channel(uniq("room:"), { user: "fallback" });
    await joined(ch);
    assert.equal(s.transport, LongPoll);
    assert.deepEqual((await push(ch, "echo", { via: "fallback" })).response, { via: "fallback" });
  } finally { s.disconnect(); }
});

test("[1.8][C75] stock LongPoll: server push, crash then automatic rejoin", T, async (t) => {
  if (!(await lpAvailable(t))) return;
  const s = lpSocket();
  try {
    const ch = s.channel(uniq("room:"), { user: "lp-crash" });
    let joins = 0, errors = 0;
    ch.join().receive("ok", () => { joins += 1; });
    await until(() => joins === 1, 5000, "join");
    const pushed = new Promise((resolve) => ch.on("lp_push", resolve));
    ch.push("push_me", { event: "lp_push", payload: { p: 1 } });
    assert.deepEqual(await pushed, { p: 1 });
    ch.onError(() => { errors += 1; });
    ch.push("crash", {});
    await until(() => errors >= 1 && joins >= 2, 8000, "phx_error then rejoin");
    assert.deepEqual((await push(ch, "echo", { after: "rejoin" })).response, { after: "rejoin" });
  } finally { s.disconnect(); }
});
