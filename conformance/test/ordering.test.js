// Ordering and pipelining (issue 10), raw frames (vsn 2.0.0): what a client that sends
// without waiting gets back, and in which order. Phoenix's socket process reads one
// frame at a time and handles a join to completion (the reply is written before the
// next frame is read, fact sheet §28); a channel process handles its mailbox in order,
// so its pushes and replies reach the wire in the order it made them. Large volumes
// must be absorbed (backpressure), never answered by dropping the connection.
//
// Only the order of the frames a case names is asserted: presence_diff frames, whose
// timing Phoenix does not fix (they are computed in a separate process), are skipped.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { Raw, openRaw } = require("../lib/raw");
const { uniq, T } = require("../lib/util");

const PRIVATE = { token: "letmein" };

/** The frames received so far, minus presence_diff broadcasts. */
const ordered = (c) => c.frames.filter((f) => !(f.msg && f.msg.event === "presence_diff"));
const refs = (frames) => frames.map((f) => (f.msg ? f.msg.ref : f.text)).join(",");
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

test("[I10][f28][f27] 40 pipelined joins of different topics are answered in order, and a heartbeat sent after them is answered last", T(), async (t) => {
  const c = await openRaw(t);
  const base = uniq("private:");
  const n = 40;
  for (let i = 1; i <= n; i++) c.send(String(i), String(i), `${base}-${i}`, "phx_join", PRIVATE);
  c.send(null, "hb", "phoenix", "heartbeat", {});
  await c.waitFor(() => c.frames.length >= n + 1, 10000, `${n} join replies and the heartbeat reply`);
  assert.equal(refs(c.frames), [...range(1, n), "hb"].join(","),
    "the socket handles each join to completion before it reads the next frame");
  for (let i = 1; i <= n; i++) {
    assert.deepEqual(c.frames[i - 1].json, [String(i), String(i), `${base}-${i}`, "phx_reply", { status: "ok", response: { topic: `${base}-${i}` } }]);
  }
  assert.deepEqual(c.frames[n].json, [null, "hb", "phoenix", "phx_reply", { status: "ok", response: {} }]);
});

test("[I10][f27][f28] four pipelined joins (ok, refused, unmatched topic, room) are answered in order", T(), async (t) => {
  const c = await openRaw(t);
  const ok = uniq("private:"), refused = uniq("private:"), unmatched = uniq("nowhere:"), room = uniq("room:");
  c.send("1", "1", ok, "phx_join", PRIVATE);
  c.send("2", "2", refused, "phx_join", { token: "wrong" });
  c.send("3", "3", unmatched, "phx_join", {});
  c.send("4", "4", room, "phx_join", { user: "pipelined" });
  const replies = () => c.frames.filter((f) => f.msg && f.msg.event === "phx_reply");
  await c.waitFor(() => replies().length >= 4, 6000, "four join replies");
  assert.deepEqual(replies().map((f) => f.json), [
    ["1", "1", ok, "phx_reply", { status: "ok", response: { topic: ok } }],
    ["2", "2", refused, "phx_reply", { status: "error", response: { reason: "unauthorized" } }],
    [null, "3", unmatched, "phx_reply", { status: "error", response: { reason: "unmatched topic" } }],
    ["4", "4", room, "phx_reply", { status: "ok", response: { topic: room } }],
  ]);
  const firstOther = c.frames.findIndex((f) => !(f.msg && f.msg.event === "phx_reply"));
  assert.ok(firstOther === -1 || firstOther >= 4, "nothing but the four replies comes before the room's own frames");
});

test("[I10][f28] join of a room and an immediate echo: join reply, then presence_state, then the echo reply", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("room:");
  c.send("1", "1", topic, "phx_join", { user: "quick" });
  c.send("1", "2", topic, "echo", { right: "away" });
  await c.waitFor(() => ordered(c).length >= 3, 6000, "three frames");
  const [reply, state, echo] = ordered(c).map((f) => f.json);
  assert.deepEqual(reply, ["1", "1", topic, "phx_reply", { status: "ok", response: { topic } }]);
  assert.deepEqual(state.slice(0, 4), ["1", null, topic, "presence_state"],
    "the channel handles its :after_join before the echo that was sent after the join");
  assert.deepEqual(echo, ["1", "2", topic, "phx_reply", { status: "ok", response: { right: "away" } }]);
});

test("[I10][f28][f33] join of a room and an immediate crash: presence_state arrives before phx_error", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("room:");
  c.send("1", "1", topic, "phx_join", { user: "doomed" });
  c.send("1", "2", topic, "crash", {});
  await c.nextWhere((m) => m.event === "phx_error", 6000, "phx_error");
  const events = ordered(c).map((f) => f.msg.event);
  assert.deepEqual(events, ["phx_reply", "presence_state", "phx_error"]);
  assert.deepEqual(ordered(c)[2].json.slice(0, 4), ["1", "1", topic, "phx_error"]);
});

test("[I10] 10 000 pipelined pushes on one channel: every one answered, in order, the socket stays open", T(60000), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  const n = 10000;
  const start = c.frames.length;
  for (let i = 1; i <= n; i++) c.send("1", String(i), topic, "echo", { i });
  await c.waitFor(() => c.frames.length - start >= n || c.closed, 45000, `${n} replies`);
  assert.equal(c.closed, null, "the server must not drop a client for pipelining");
  const got = c.frames.slice(start);
  assert.equal(got.length, n);
  got.forEach((f, k) => {
    const i = k + 1;
    if (f.msg.ref !== String(i) || f.msg.payload.status !== "ok" || f.msg.payload.response.i !== i) {
      assert.fail(`reply ${i} out of order or wrong: ${f.text}`);
    }
  });
});

test("[I10][A3] a publisher shouting 2 000 times without waiting is not disconnected; every subscriber gets all 2 000 in order", T(60000), async (t) => {
  const topic = uniq("private:");
  const n = 2000;
  const publisher = await openRaw(t);
  const subs = [await openRaw(t), await openRaw(t), await openRaw(t, "vsn=1.0.0")];
  for (const s of subs) await s.joinOk("1", topic, PRIVATE);
  await publisher.joinOk("1", topic, PRIVATE);
  for (let i = 0; i < n; i++) publisher.send("1", `s${i}`, topic, "shout", { i });
  const shouts = (c) => c.frames.filter((f) => f.msg && f.msg.event === "shout").map((f) => f.msg.payload.i);
  const replies = () => publisher.frames.filter((f) => f.msg && f.msg.event === "phx_reply" && String(f.msg.ref).startsWith("s"));
  for (const [who, c] of [["publisher", publisher], ...subs.map((s, k) => [`subscriber ${k}`, s])]) {
    await c.waitFor(() => c.count("shout") >= n || c.closed, 45000, `${who}: ${n} shouts`);
    assert.equal(c.closed, null, `${who} must stay connected`);
    assert.deepEqual(shouts(c), Array.from({ length: n }, (_, i) => i), `${who} got every shout, in order`);
  }
  await publisher.waitFor(() => publisher.count("phx_reply") >= n + 1 || publisher.closed, 15000, `${n} shout replies`);
  assert.equal(publisher.closed, null);
  assert.deepEqual(replies().map((f) => f.msg.ref), Array.from({ length: n }, (_, i) => `s${i}`), "every shout answered ok, in order");
});

test("[I10][A32] a heartbeat sent during a sustained broadcast stream is answered, and the stream arrives whole", T(60000), async (t) => {
  const topic = uniq("private:");
  const listener = await openRaw(t);
  await listener.joinOk("1", topic, PRIVATE);
  const pumps = [await Raw.open(), await Raw.open()];
  t.after(() => pumps.forEach((p) => p.close()));
  for (const p of pumps) await p.joinOk("1", topic, PRIVATE);
  const perPump = 1500;
  // Both pumps shout in bursts while the listener keeps receiving; the heartbeat goes
  // out once the stream is flowing.
  const bursts = pumps.map((p, k) => (async () => {
    for (let i = 0; i < perPump; i += 100) {
      for (let j = i; j < i + 100; j++) p.send("1", `p${j}`, topic, "shout", { k, j });
      await p.waitFor(() => p.count("phx_reply") >= i + 100 + 1 || p.closed, 20000, "the burst's replies");
    }
  })());
  const count = () => listener.count("shout");
  await listener.waitFor(() => count() >= 200, 20000, "the stream flowing");
  listener.send(null, "hb", "phoenix", "heartbeat", {});
  const hb = await listener.nextWhere((m) => m.topic === "phoenix", 20000, "the heartbeat reply");
  assert.deepEqual(hb.json, [null, "hb", "phoenix", "phx_reply", { status: "ok", response: {} }]);
  await Promise.all(bursts);
  await listener.waitFor(() => count() >= 2 * perPump || listener.closed, 20000, "the whole stream");
  assert.equal(listener.closed, null);
  for (const k of [0, 1]) {
    const mine = listener.frames.filter((f) => f.msg && f.msg.event === "shout" && f.msg.payload.k === k).map((f) => f.msg.payload.j);
    assert.deepEqual(mine, Array.from({ length: perPump }, (_, j) => j), `pump ${k}'s shouts, in order`);
  }
});
