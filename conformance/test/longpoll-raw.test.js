// Long-poll over raw HTTP: the exact protocol. The protocol status is in the JSON
// body; the HTTP status is always 200. Only one case ([C55]) waits for a full
// long-poll window (LP_WINDOW_MS); every other poll returns as soon as a message is
// buffered. Skipped, with the reason printed, when the server answers 404 at
// <mount>/longpoll (a WebSocket-only server).
"use strict";
const test = require("../lib/case");
const { only18 } = test;
const assert = require("node:assert/strict");
const { LP, request, LpSession, withToken } = require("../lib/lp");
const { openRaw } = require("../lib/raw");
const { uniq, sleep, T } = require("../lib/util");
const { LP_WINDOW_MS, SERVER_GEN } = require("../lib/config");

const is18 = SERVER_GEN === "1.8";
const TL = T(LP_WINDOW_MS + 8000);
const PRIVATE = { token: "letmein" };

let available = null;
async function needLongPoll(t) {
  if (available === null) available = (await request("GET", LP + "?vsn=2.0.0")).code !== 404;
  if (!available) t.skip("the server does not serve long-poll at <mount>/longpoll (HTTP 404)");
  return available;
}

const okReply = (jr, ref, topic, response) => [jr, ref, topic, "phx_reply", { status: "ok", response }];

test("[C52][D86][f54][f55] first GET: HTTP 200, body {status: 410, token, messages: []}, JSON", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const res = await request("GET", LP + "?vsn=2.0.0");
  assert.equal(res.code, 200);
  assert.equal(res.body.status, 410);
  assert.equal(typeof res.body.token, "string");
  assert.ok(res.body.token.length >= 16, "the token is opaque and unguessable");
  assert.deepEqual(res.body.messages, []);
  assert.match(res.headers["content-type"], /^application\/json/);
});

test("[D86] long-poll responses carry cache-control: no-store",
  only18("Phoenix 1.7 leaves Plug's default cache-control on long-poll responses", TL), async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  assert.equal(s.first.headers["cache-control"], "no-store", "the session-creating GET");
  const post = await s.post([JSON.stringify([null, "1", "phoenix", "heartbeat", {}])]);
  assert.equal(post.headers["cache-control"], "no-store", "a POST");
});

test("[C53][C54][f56] POST a join: {status: 200}; the next poll returns frames as JSON strings, reply first", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("room:");
  const res = await s.post([JSON.stringify(["1", "1", topic, "phx_join", { user: "lp" }])]);
  assert.equal(res.code, 200);
  assert.deepEqual(res.body, { status: 200 });
  const poll = await s.poll();
  assert.equal(poll.code, 200);
  assert.equal(poll.body.status, 200);
  assert.equal(poll.body.token, s.token, "the same token comes back on every poll");
  assert.ok(poll.body.messages.length >= 1);
  for (const m of poll.body.messages) assert.equal(typeof m, "string", "each message is a string holding one frame");
  assert.deepEqual(JSON.parse(poll.body.messages[0]), okReply("1", "1", topic, { topic }));
  s.received.push(...poll.body.messages.map((m) => JSON.parse(m)));
  await s.pollUntil((r) => r.some((m) => m[3] === "presence_state" && m[4].lp), "presence_state listing lp");
});

test("[C66][f58] an ndjson batch is handled in order", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE], ["1", "2", topic, "echo", { n: 1 }], ["1", "3", topic, "echo", { n: 2 }]);
  const got = await s.pollCount(3);
  assert.deepEqual(got, [okReply("1", "1", topic, { topic }), okReply("1", "2", topic, { n: 1 }), okReply("1", "3", topic, { n: 2 })]);
});

test("[C55][f56] a poll with nothing to say answers {status: 204} after the window", T(LP_WINDOW_MS * 2 + 5000), async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const started = Date.now();
  const res = await s.poll();
  const took = Date.now() - started;
  assert.equal(res.code, 200);
  assert.deepEqual(res.body, { status: 204, token: s.token, messages: [] });
  assert.ok(took >= LP_WINDOW_MS * 0.5, `the poll waited (${took} ms of a ${LP_WINDOW_MS} ms window)`);
});

test("[f56] a waiting poll returns as soon as a message arrives", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  if (LP_WINDOW_MS < 1000) return t.skip("window too short to tell");
  const s = await LpSession.create();
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE]);
  await s.pollCount(1);
  const ws = await openRaw(t);
  await ws.joinOk("1", topic, PRIVATE);
  const started = Date.now();
  const waiting = s.poll();
  await sleep(300);
  ws.send("1", "2", topic, "shout", { wake: true });
  const res = await waiting;
  const took = Date.now() - started;
  assert.equal(res.body.status, 200);
  assert.deepEqual(res.body.messages.map((m) => JSON.parse(m)), [[null, null, topic, "shout", { wake: true }]]);
  assert.ok(took < LP_WINDOW_MS * 0.75, `returned after ${took} ms, not at the end of the window`);
});

test("[C57][f57][f58] a bogus token: POST {status: 410}; GET starts a new session (410, new token)", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const post = await request("POST", withToken("vsn=2.0.0", "bogus"), { body: '[null,"1","phoenix","heartbeat",{}]', headers: { "content-type": "application/x-ndjson" } });
  assert.equal(post.code, 200);
  assert.deepEqual(post.body, { status: 410 });
  const get = await request("GET", withToken("vsn=2.0.0", "bogus"));
  assert.equal(get.body.status, 410);
  assert.equal(typeof get.body.token, "string");
  assert.notEqual(get.body.token, "bogus");
});

test("[D84][D85] the x-phoenix-longpoll-token header is accepted and wins over ?token=",
  only18("Phoenix 1.7 reads the session token from ?token= only", TL), async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  const res = await request("POST", withToken("vsn=2.0.0", "bogus"), {
    body: JSON.stringify(["1", "1", topic, "phx_join", PRIVATE]),
    headers: { "x-phoenix-longpoll-token": s.token, "content-type": "application/x-ndjson" },
  });
  assert.deepEqual(res.body, { status: 200 });
  const poll = await request("GET", withToken("vsn=2.0.0", "bogus"), { headers: { "x-phoenix-longpoll-token": s.token } });
  assert.equal(poll.body.status, 200);
  assert.deepEqual(JSON.parse(poll.body.messages[0]), okReply("1", "1", topic, { topic }));
});

test("[C72][contract] reject=1: HTTP 200 with body exactly {status: 403} (both vsns)", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  for (const vsn of ["2.0.0", "1.0.0"]) {
    const res = await request("GET", `${LP}?vsn=${vsn}&reject=1`);
    assert.equal(res.code, 200);
    assert.deepEqual(res.body, { status: 403 });
  }
});

test("[C79][f4] an unknown vsn: {status: 403}", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  assert.deepEqual((await request("GET", `${LP}?vsn=123.1.1`)).body, { status: 403 });
});

test("[f54] OPTIONS is a CORS preflight", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  // No Origin header: the contract sets no origin policy (a Phoenix app hosting it runs
  // with check_origin: false), and Phoenix checks the origin before it dispatches OPTIONS.
  const res = await request("OPTIONS", LP, { headers: { "access-control-request-headers": "x-phoenix-longpoll-token" } });
  assert.equal(res.code, 200);
  assert.equal(res.headers["access-control-allow-origin"], "*");
  assert.match(String(res.headers["access-control-allow-methods"]).toLowerCase(), /post/);
});

test("[spec] OPTIONS: empty body, the asked headers echoed, get/post/options, max-age 3600", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const asked = await request("OPTIONS", LP, { headers: { "access-control-request-headers": "x-phoenix-longpoll-token" } });
  assert.equal(asked.code, 200);
  assert.equal(asked.raw, "");
  assert.equal(asked.headers["access-control-allow-headers"], "x-phoenix-longpoll-token");
  assert.equal(asked.headers["access-control-allow-methods"], "get, post, options");
  assert.equal(asked.headers["access-control-max-age"], "3600");
  const none = await request("OPTIONS", LP);
  assert.equal(none.code, 200);
  assert.equal(none.headers["access-control-allow-headers"], "");
});

test("[spec] a method other than GET, POST and OPTIONS is a real HTTP 400 with an empty body", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  for (const method of ["PUT", "DELETE"]) {
    const res = await request(method, `${LP}?vsn=2.0.0`);
    assert.equal(res.code, 400, method);
    assert.equal(res.raw, "", method);
  }
});

test("[C64][f32] POST to a topic never joined: 200; the poll has unmatched topic with join_ref null", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("room:");
  await s.send(["1", "12300", topic, "echo", {}]);
  assert.deepEqual(await s.reply("12300"), [null, "12300", topic, "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);
});

test("[C75][f33] crash: the POST is acked 200; the poll has phx_error with ref = join_ref", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE]);
  await s.pollCount(1);
  await s.send(["1", "2", topic, "crash", {}]);
  await s.pollCount(2);
  assert.deepEqual(s.received[1], ["1", "1", topic, "phx_error", is18 ? { reason: "channel_crash" } : {}]);
});

test("[C77][A5] leave: reply ok, then phx_close with ref = join_ref", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE]);
  await s.send(["1", "2", topic, "phx_leave", {}]);
  await s.pollCount(3);
  assert.deepEqual(s.received.slice(1), [okReply("1", "2", topic, {}), ["1", "1", topic, "phx_close", {}]]);
});

test("[C76][f30] a phx_leave with a stale join_ref is ignored (POST still 200)", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE]);
  await s.send(["stale", "2", topic, "phx_leave", {}]);
  await s.send(["1", "3", topic, "echo", { marker: true }]);
  await s.reply("3");
  assert.deepEqual(s.received, [okReply("1", "1", topic, { topic }), okReply("1", "3", topic, { marker: true })]);
});

test("[C62][C65] an event without join_ref on a joined topic is handled", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE], [null, "2", topic, "echo", { n: 2 }]);
  assert.deepEqual(await s.reply("2"), okReply("1", "2", topic, { n: 2 }));
});

test("[C71][f58] an ndjson POST of 101 lines dispatches the first 100 only", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create();
  const topic = uniq("private:");
  const lines = [["1", "1", topic, "phx_join", PRIVATE]];
  for (let i = 2; i <= 101; i++) lines.push(["1", String(i), topic, "echo", { i }]);
  await s.send(...lines);
  await s.send(["1", "marker", topic, "echo", {}]);
  await s.reply("marker");
  const refs = s.received.map((m) => m[1]);
  assert.deepEqual(refs, [...Array.from({ length: 100 }, (_, i) => String(i + 1)), "marker"]);
});

test("[C80][f58][f17] vsn 1.0.0: a POST of one JSON object (not ndjson) is one frame; polls carry V1 objects", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const s = await LpSession.create("vsn=1.0.0");
  const topic = uniq("private:");
  const join = JSON.stringify({ topic, event: "phx_join", payload: PRIVATE, ref: "1" });
  assert.deepEqual((await s.post(join, "application/json")).body, { status: 200 });
  const echo = JSON.stringify({ topic, event: "echo", payload: { v: 1 }, ref: "2" });
  assert.deepEqual((await s.post(echo, "")).body, { status: 200 }, "an empty content-type is one frame too");
  await s.pollCount(2);
  assert.deepEqual(s.received, [
    { topic, event: "phx_reply", payload: { status: "ok", response: { topic } }, ref: "1" },
    { topic, event: "phx_reply", payload: { status: "ok", response: { v: 1 } }, ref: "2" },
  ]);
});

test("[A3] broadcasts cross transports: WebSocket shout reaches the poll, long-poll shout reaches the WebSocket", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const topic = uniq("private:");
  const s = await LpSession.create();
  await s.send(["1", "1", topic, "phx_join", PRIVATE]);
  await s.pollCount(1);
  const ws = await openRaw(t);
  await ws.joinOk("1", topic, PRIVATE);
  ws.send("1", "2", topic, "shout", { from: "ws" });
  await s.pollCount(2);
  assert.deepEqual(s.received[1], [null, null, topic, "shout", { from: "ws" }]);
  await s.send(["1", "2", topic, "shout", { from: "lp" }]);
  const f = await ws.nextWhere((m) => m.event === "shout" && m.payload.from === "lp", 6000, "the long-poll shout");
  assert.deepEqual(f.json, [null, null, topic, "shout", { from: "lp" }]);
});

test("[contract][C78][f38] disconnect_user ends the long-poll session: the next poll and POST get 410", TL, async (t) => {
  if (!(await needLongPoll(t))) return;
  const user = uniq("u");
  const s = await LpSession.create(`vsn=2.0.0&user_id=${user}`);
  const topic = uniq("private:");
  await s.send(["1", "1", topic, "phx_join", PRIVATE]);
  await s.pollCount(1);
  const admin = await openRaw(t);
  await admin.joinOk("1", "room:admin", { user: uniq("admin-") });
  admin.send("1", "2", "room:admin", "disconnect_user", { user_id: user });
  await admin.reply("2");
  await sleep(100);
  let status;
  for (let i = 0; i < 3; i++) {
    const res = await s.poll();
    status = res.body.status;
    if (status !== 200) break; // frames still buffered before the end are fine
  }
  assert.equal(status, 410, "the session is gone");
  const post = await s.post([JSON.stringify(["1", "3", topic, "echo", {}])]);
  assert.deepEqual(post.body, { status: 410 });
});
