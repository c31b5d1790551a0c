// Socket and channel semantics on the wire, with a raw WebSocket client and exact
// frames, for both serializers (vsn 1.0.0: JSON objects, vsn 2.0.0: JSON arrays).
// Titles name the upstream behaviour (phoenix-test-behaviors.md letter+number, or a
// fact-sheet § number written as "f<N>") or the contract.
//
// Exact-order checks use private:* topics: they have no presence, so no
// presence_state / presence_diff frames interleave.
"use strict";
const test = require("../lib/case");
const { only18 } = test;
const assert = require("node:assert/strict");
const { openRaw } = require("../lib/raw");
const { uniq, T } = require("../lib/util");
const { SERVER_GEN } = require("../lib/config");

const VSNS = ["1.0.0", "2.0.0"];
const tag = (vsn) => (vsn === "1.0.0" ? "v1" : "v2");
const PRIVATE = { token: "letmein" };
const is18 = SERVER_GEN === "1.8";

/** What a reply looks like on this connection. */
const reply = (c, joinRef, ref, topic, status, response) =>
  c.wire({ join_ref: joinRef, ref, topic, event: "phx_reply", payload: { status, response } });

/** phx_close / phx_error: ref = join_ref in V2; ref null in V1 (f18). */
const lifecycle = (c, joinRef, topic, event, payload) =>
  c.wire({ join_ref: joinRef, ref: c.vsn === "1.0.0" ? null : joinRef, topic, event, payload });

/** A push or broadcast: ref null; join_ref = the channel's (push) or null (broadcast). */
const pushed = (c, joinRef, topic, event, payload) =>
  c.wire({ join_ref: c.vsn === "1.0.0" ? undefined : joinRef, ref: null, topic, event, payload });

for (const vsn of VSNS) {
  const q = `vsn=${vsn}`;

  test(`[A32][f26] ${tag(vsn)} heartbeat reply is exact, before and without any join`, T(), async (t) => {
    const c = await openRaw(t, q);
    for (const ref of ["1", "2"]) {
      c.send(null, ref, "phoenix", "heartbeat", {});
      assert.deepEqual(await c.json(), reply(c, null, ref, "phoenix", "ok", {}));
    }
  });

  test(`[A2][A1][contract] ${tag(vsn)} room join: ok {topic}, refs echoed`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("room:");
    c.send("11", "1", topic, "phx_join", { user: "u" });
    assert.deepEqual(await c.json(), reply(c, "11", "1", topic, "ok", { topic }));
  });

  test(`[A34][f27] ${tag(vsn)} join of an unmatched topic: exact error, join_ref null`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("unmatched-");
    c.send("11", "1", topic, "phx_join", {});
    assert.deepEqual(await c.json(), reply(c, null, "1", topic, "error", { reason: "unmatched topic" }));
  });

  test(`[A24][f32] ${tag(vsn)} event on a topic never joined: unmatched topic, twice`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("room:");
    for (const ref of ["5", "6"]) {
      c.send("1", ref, topic, "echo", { n: ref });
      assert.deepEqual(await c.json(), reply(c, null, ref, topic, "error", { reason: "unmatched topic" }));
    }
  });

  test(`[contract] ${tag(vsn)} private join without the token: error {reason: unauthorized}`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("private:");
    c.send("3", "3", topic, "phx_join", { token: "wrong" });
    assert.deepEqual(await c.json(), reply(c, "3", "3", topic, "error", { reason: "unauthorized" }));
    // The refused join left nothing behind: events are unmatched.
    c.send("3", "4", topic, "echo", {});
    assert.deepEqual(await c.json(), reply(c, null, "4", topic, "error", { reason: "unmatched topic" }));
  });

  test(`[f35][contract] ${tag(vsn)} echo and echo_error reply with the payload and the join_ref`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("private:");
    c.send("7", "7", topic, "phx_join", PRIVATE);
    assert.deepEqual(await c.json(), reply(c, "7", "7", topic, "ok", { topic }));
    const body = { s: "héllo ✓", n: 1.5, a: [1, null, true], o: { deep: { x: [] } } };
    c.send("7", "8", topic, "echo", body);
    assert.deepEqual(await c.json(), reply(c, "7", "8", topic, "ok", body));
    c.send("7", "9", topic, "echo_error", { why: "asked" });
    assert.deepEqual(await c.json(), reply(c, "7", "9", topic, "error", { why: "asked" }));
  });

  test(`[A5][f30] ${tag(vsn)} leave: reply ok {}, then phx_close {}, in that order`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("private:");
    await c.joinOk("3", topic, PRIVATE);
    c.send("3", "4", topic, "phx_leave", {});
    assert.deepEqual(await c.json(), reply(c, "3", "4", topic, "ok", {}));
    assert.deepEqual(await c.json(), lifecycle(c, "3", topic, "phx_close", {}));
  });

  test(`[A22][f33] ${tag(vsn)} crash: no reply, phx_error, the socket's other channel untouched`, T(), async (t) => {
    const c = await openRaw(t, q);
    const a = uniq("private:"), b = uniq("private:");
    await c.joinOk("1", a, PRIVATE);
    await c.joinOk("2", b, PRIVATE);
    c.send("1", "3", a, "crash", {});
    const want = is18 ? { reason: "channel_crash" } : {};
    assert.deepEqual(await c.json(), lifecycle(c, "1", a, "phx_error", want));
    c.send("2", "4", b, "echo", { still: "here" });
    assert.deepEqual(await c.json(), reply(c, "2", "4", b, "ok", { still: "here" }));
    c.send("1", "5", a, "echo", {});
    assert.deepEqual(await c.json(), reply(c, null, "5", a, "error", { reason: "unmatched topic" }));
  });

  test(`[A38][f34] ${tag(vsn)} stop: no reply, phx_close {}, then the topic is unmatched`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("private:");
    await c.joinOk("1", topic, PRIVATE);
    c.send("1", "2", topic, "stop", {});
    assert.deepEqual(await c.json(), lifecycle(c, "1", topic, "phx_close", {}));
    c.send("1", "3", topic, "echo", {});
    assert.deepEqual(await c.json(), reply(c, null, "3", topic, "error", { reason: "unmatched topic" }));
  });

  test(`[G129][f15][contract] ${tag(vsn)} push_me: a push with the join_ref and ref null; {} without payload`, T(), async (t) => {
    const c = await openRaw(t, q);
    const topic = uniq("private:");
    await c.joinOk("4", topic, PRIVATE);
    c.send("4", "5", topic, "push_me", { event: "hello", payload: { x: 1 } });
    assert.deepEqual(await c.json(), pushed(c, "4", topic, "hello", { x: 1 }));
    c.send("4", "6", topic, "push_me", { event: "empty" });
    assert.deepEqual(await c.json(), pushed(c, "4", topic, "empty", {}));
  });

  test(`[A3][f15] ${tag(vsn)} shout: a broadcast (refs null) to every member, the sender too; reply ok {}`, T(), async (t) => {
    const c = await openRaw(t, q);
    const other = await openRaw(t, vsn === "1.0.0" ? "vsn=2.0.0" : "vsn=1.0.0");
    const topic = uniq("private:");
    await c.joinOk("1", topic, PRIVATE);
    await other.joinOk("9", topic, PRIVATE);
    c.send("1", "2", topic, "shout", { n: 1 });
    const mine = [await c.json(), await c.json()];
    assert.deepEqual(mine.find((f) => JSON.stringify(f).includes("shout")), pushed(c, null, topic, "shout", { n: 1 }));
    assert.deepEqual(mine.find((f) => JSON.stringify(f).includes("phx_reply")), reply(c, "1", "2", topic, "ok", {}));
    assert.deepEqual(await other.json(), pushed(other, null, topic, "shout", { n: 1 }));
  });
}

test("[G127][f36] shout_others: every member but the sender; the sender gets only the reply", T(), async (t) => {
  const a = await openRaw(t, "vsn=2.0.0"), b = await openRaw(t, "vsn=1.0.0"), c = await openRaw(t, "vsn=2.0.0");
  const topic = uniq("private:");
  await a.joinOk("1", topic, PRIVATE);
  await b.joinOk("1", topic, PRIVATE);
  await c.joinOk("5", topic, PRIVATE);
  a.send("1", "2", topic, "shout_others", { n: 2 });
  assert.deepEqual(await b.json(), { topic, event: "shout", payload: { n: 2 }, ref: null });
  assert.deepEqual(await c.json(), [null, null, topic, "shout", { n: 2 }]);
  assert.deepEqual(await a.json(), ["1", "2", topic, "phx_reply", { status: "ok", response: {} }]);
  assert.equal(await a.silent(300), true, "the sender must not get its own shout_others");
});

test("[contract] unknown events, and the room:admin events on other rooms, are unhandled", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("room:");
  await c.joinOk("1", topic, {});
  const unhandled = (ref) => ["1", ref, topic, "phx_reply", { status: "error", response: { reason: "unhandled event" } }];
  c.send("1", "2", topic, "what_is_this", {});
  assert.deepEqual(await c.reply("2"), unhandled("2"));
  c.send("1", "3", topic, "broadcast", { topic, event: "x", payload: {} });
  assert.deepEqual(await c.reply("3"), unhandled("3"));
  c.send("1", "4", topic, "disconnect_user", { user_id: "nobody" });
  assert.deepEqual(await c.reply("4"), unhandled("4"));
});

test("[contract][J50] noreply: nothing comes back, and the channel stays joined", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  c.send("1", "2", topic, "noreply", {});
  assert.equal(await c.silent(400), true, "noreply must send nothing");
  c.send("1", "3", topic, "echo", { alive: true });
  assert.deepEqual(await c.json(), ["1", "3", topic, "phx_reply", { status: "ok", response: { alive: true } }]);
});

test("[A6][f32] after a leave, events on the topic get unmatched topic", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("3", topic, PRIVATE);
  c.send("3", "4", topic, "phx_leave", {});
  await c.event("phx_close", topic);
  c.send("3", "5", topic, "echo", {});
  assert.deepEqual(await c.json(), [null, "5", topic, "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);
});

test("[f30] leaving a topic that is not joined: ok {}, refs echoed", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("room:");
  c.send("7", "8", topic, "phx_leave", {});
  assert.deepEqual(await c.json(), ["7", "8", topic, "phx_reply", { status: "ok", response: {} }]);
});

test("[A30][f29] duplicate join: the new join's reply, then phx_close for the old join_ref", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  c.send("2", "2", topic, "phx_join", PRIVATE);
  assert.deepEqual(await c.json(), ["2", "2", topic, "phx_reply", { status: "ok", response: { topic } }]);
  assert.deepEqual(await c.json(), ["1", "1", topic, "phx_close", {}]);
  c.send("2", "3", topic, "echo", { on: "new" });
  assert.deepEqual(await c.json(), ["2", "3", topic, "phx_reply", { status: "ok", response: { on: "new" } }]);
});

test("[f31][f30] a stale join_ref is dropped silently, for events and for phx_leave",
  only18("Phoenix 1.7 forwards an event whose join_ref is stale to the channel (the echo is answered)", T()), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("5", topic, PRIVATE);
  c.send("4", "6", topic, "echo", {});
  c.send("4", "7", topic, "phx_leave", {});
  assert.equal(await c.silent(400), true, "nothing may answer a stale join_ref");
  c.send("5", "8", topic, "echo", { ok: 1 });
  assert.deepEqual(await c.json(), ["5", "8", topic, "phx_reply", { status: "ok", response: { ok: 1 } }]);
});

test("[f31][f30] a stale join_ref: events still reach the channel (answered with its join_ref), phx_leave is ignored",
  { phoenix: ["1.7"], why: "Phoenix 1.8 drops every message whose join_ref is stale (see the {1.8} case)", ...T() }, async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("5", topic, PRIVATE);
  c.send("4", "6", topic, "echo", { stale: true });
  assert.deepEqual(await c.json(), ["5", "6", topic, "phx_reply", { status: "ok", response: { stale: true } }]);
  c.send("4", "7", topic, "phx_leave", {});
  assert.equal(await c.silent(400), true, "a stale phx_leave is ignored");
  c.send("5", "8", topic, "echo", { ok: 1 });
  assert.deepEqual(await c.json(), ["5", "8", topic, "phx_reply", { status: "ok", response: { ok: 1 } }]);
});

test("[C65][f31] an event with join_ref null reaches the joined channel", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("5", topic, PRIVATE);
  c.send(null, "6", topic, "echo", { n: 6 });
  assert.deepEqual(await c.json(), ["5", "6", topic, "phx_reply", { status: "ok", response: { n: 6 } }]);
});

test("[C77][f30] phx_leave with join_ref null is accepted: reply, then phx_close",
  only18("Phoenix 1.7 ignores a phx_leave with join_ref null on a channel joined with a join_ref", T()), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("5", topic, PRIVATE);
  c.send(null, "6", topic, "phx_leave", {});
  assert.deepEqual(await c.json(), ["5", "6", topic, "phx_reply", { status: "ok", response: {} }]);
  assert.deepEqual(await c.json(), ["5", "5", topic, "phx_close", {}]);
});

test("[contract] room:admin broadcast reaches the members of another topic (v1 and v2)", T(), async (t) => {
  const topic = uniq("private:");
  const admin = await openRaw(t), m2 = await openRaw(t), m1 = await openRaw(t, "vsn=1.0.0");
  await m2.joinOk("1", topic, PRIVATE);
  await m1.joinOk("1", topic, PRIVATE);
  await admin.joinOk("1", "room:admin", { user: uniq("admin-") });
  admin.send("1", "2", "room:admin", "broadcast", { topic, event: "news", payload: { v: 3 } });
  assert.deepEqual(await admin.reply("2"), ["1", "2", "room:admin", "phx_reply", { status: "ok", response: {} }]);
  assert.deepEqual(await m2.json(), [null, null, topic, "news", { v: 3 }]);
  assert.deepEqual(await m1.json(), { topic, event: "news", payload: { v: 3 }, ref: null });
});

test("[A29][E103][f38] disconnect_user closes every socket of that user (1.8: 1001, 1.7: 1000), and only those", T(), async (t) => {
  const user = uniq("u"), bystander = uniq("u");
  const a = await openRaw(t, `vsn=2.0.0&user_id=${user}`);
  const b = await openRaw(t, `vsn=1.0.0&user_id=${user}`);
  const other = await openRaw(t, `vsn=2.0.0&user_id=${bystander}`);
  const admin = await openRaw(t);
  await admin.joinOk("1", "room:admin", { user: uniq("admin-") });
  admin.send("1", "2", "room:admin", "disconnect_user", { user_id: user });
  assert.deepEqual(await admin.reply("2"), ["1", "2", "room:admin", "phx_reply", { status: "ok", response: {} }]);
  // 1.8 stops the socket with 1001 (going away) so that clients reconnect; 1.7 stops
  // it without a code, and the WebSocket adapter closes with 1000.
  const code = is18 ? 1001 : 1000;
  assert.equal(await a.closeCode(), code);
  assert.equal(await b.closeCode(), code);
  other.send(null, "1", "phoenix", "heartbeat", {});
  assert.deepEqual(await other.json(), [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);
});

test("[A7][f27] one socket joins 100 channels; the 101st join is refused", T(15000), async (t) => {
  const c = await openRaw(t);
  const base = uniq("private:");
  for (let i = 1; i <= 100; i++) c.send(String(i), String(i), `${base}-${i}`, "phx_join", PRIVATE);
  const replies = () => c.frames.filter((f) => f.msg && f.msg.event === "phx_reply");
  await c.waitFor(() => replies().length >= 100, 8000, "100 join replies");
  for (const f of replies()) assert.equal(f.msg.payload.status, "ok", JSON.stringify(f.json));
  const topic = `${base}-101`;
  c.send("101", "101", topic, "phx_join", PRIVATE);
  assert.deepEqual(await c.reply("101"), ["101", "101", topic, "phx_reply", { status: "error", response: { reason: "too many channels joined" } }]);
});

test("[f28] a join followed at once by events on that topic: they are handled after the join, in order", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  c.send("1", "1", topic, "phx_join", PRIVATE);
  for (let i = 2; i <= 6; i++) c.send("1", String(i), topic, "echo", { i });
  await c.waitFor(() => c.frames.length >= 6, 6000, "six replies");
  assert.deepEqual(c.frames.map((f) => f.json), [
    ["1", "1", topic, "phx_reply", { status: "ok", response: { topic } }],
    ...[2, 3, 4, 5, 6].map((i) => ["1", String(i), topic, "phx_reply", { status: "ok", response: { i } }]),
  ]);
});

test("[f14] V2: extra trailing array elements are ignored; a numeric ref is echoed as a number", T(), async (t) => {
  const c = await openRaw(t);
  c.sendText('[null,"1","phoenix","heartbeat",{},"extra",42]');
  assert.deepEqual(await c.json(), [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);
  c.sendText('[null,7,"phoenix","heartbeat",{}]');
  assert.deepEqual(await c.json(), [null, 7, "phoenix", "phx_reply", { status: "ok", response: {} }]);
});

test("[B49][f23] WebSocket ping frames are answered with pong, text traffic undisturbed", T(), async (t) => {
  const c = await openRaw(t);
  const pong = new Promise((resolve) => c.ws.once("pong", (data) => resolve(data.toString())));
  c.ws.ping("abc");
  assert.equal(await pong, "abc");
  c.send(null, "1", "phoenix", "heartbeat", {});
  assert.deepEqual(await c.json(), [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);
});
