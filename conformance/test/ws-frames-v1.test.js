// The vsn 1.0.0 (JSON object) counterparts of the single-serializer raw cases in
// ws-frames.test.js, so that every socket/channel rule is checked on both
// serializers. V1 servers never write join_ref, and a channel joined over V1 without
// a join_ref keeps a null join_ref in the socket's table, so its phx_close and
// phx_error carry "ref": null (fact sheet §2.2, 18).
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { openRaw } = require("../lib/raw");
const { uniq, T } = require("../lib/util");
const { SERVER_GEN } = require("../lib/config");

const V1 = "vsn=1.0.0";
const PRIVATE = { token: "letmein" };
const is18 = SERVER_GEN === "1.8";

/** A V1 frame exactly as a Phoenix server writes it. */
const frame = (topic, event, payload, ref = null) => ({ topic, event, payload, ref });
const reply = (topic, ref, status, response) => frame(topic, "phx_reply", { status, response }, ref);

test("[A30][f29][f18] v1 duplicate join: the new join's reply, then phx_close with ref null", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  c.send(null, "2", topic, "phx_join", PRIVATE);
  assert.deepEqual(await c.json(), reply(topic, "2", "ok", { topic }));
  assert.deepEqual(await c.json(), frame(topic, "phx_close", {}, null));
  c.send(null, "3", topic, "echo", { on: "new" });
  assert.deepEqual(await c.json(), reply(topic, "3", "ok", { on: "new" }));
});

test("[G127][f36] v1 shout_others: every member but the sender; the sender gets only the reply", T(), async (t) => {
  const a = await openRaw(t, V1), b = await openRaw(t, V1), c = await openRaw(t, "vsn=2.0.0");
  const topic = uniq("private:");
  await a.joinOk("1", topic, PRIVATE);
  await b.joinOk("1", topic, PRIVATE);
  await c.joinOk("1", topic, PRIVATE);
  a.send(null, "2", topic, "shout_others", { n: 2 });
  assert.deepEqual(await b.json(), frame(topic, "shout", { n: 2 }));
  assert.deepEqual(await c.json(), [null, null, topic, "shout", { n: 2 }]);
  assert.deepEqual(await a.json(), reply(topic, "2", "ok", {}));
  assert.equal(await a.silent(300), true, "the sender must not get its own shout_others");
});

test("[contract][J50] v1 noreply: nothing comes back, and the channel stays joined", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  c.send(null, "2", topic, "noreply", {});
  assert.equal(await c.silent(400), true, "noreply must send nothing");
  c.send(null, "3", topic, "echo", { alive: true });
  assert.deepEqual(await c.json(), reply(topic, "3", "ok", { alive: true }));
});

test("[contract] v1 unknown events, and the room:admin events on other rooms, are unhandled", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  const unhandled = (ref) => reply(topic, ref, "error", { reason: "unhandled event" });
  c.send(null, "2", topic, "what_is_this", {});
  assert.deepEqual(await c.json(), unhandled("2"));
  c.send(null, "3", topic, "broadcast", { topic, event: "x", payload: {} });
  assert.deepEqual(await c.json(), unhandled("3"));
  c.send(null, "4", topic, "disconnect_user", { user_id: "nobody" });
  assert.deepEqual(await c.json(), unhandled("4"));
});

test("[A6][f32] v1 after a leave, events on the topic get unmatched topic", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("private:");
  await c.joinOk("3", topic, PRIVATE);
  c.send(null, "4", topic, "phx_leave", {});
  assert.deepEqual(await c.json(), reply(topic, "4", "ok", {}));
  assert.deepEqual(await c.json(), frame(topic, "phx_close", {}, null));
  c.send(null, "5", topic, "echo", {});
  assert.deepEqual(await c.json(), reply(topic, "5", "error", { reason: "unmatched topic" }));
});

test("[f30] v1 leaving a topic that is not joined: ok {}, ref echoed", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("room:");
  c.send(null, "8", topic, "phx_leave", {});
  assert.deepEqual(await c.json(), reply(topic, "8", "ok", {}));
});

test("[f28] v1 a join followed at once by events on that topic: handled after the join, in order", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("private:");
  c.send(null, "1", topic, "phx_join", PRIVATE);
  for (let i = 2; i <= 6; i++) c.send(null, String(i), topic, "echo", { i });
  await c.waitFor(() => c.frames.length >= 6, 6000, "six replies");
  assert.deepEqual(c.frames.map((f) => f.json), [
    reply(topic, "1", "ok", { topic }),
    ...[2, 3, 4, 5, 6].map((i) => reply(topic, String(i), "ok", { i })),
  ]);
});

test("[A22][f33][f18] v1 crash of a room (with presence): phx_error with ref null, the socket stays up", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("room:");
  await c.joinOk("1", topic, { user: "v1crash" });
  c.send(null, "2", topic, "crash", {});
  const err = await c.event("phx_error", topic);
  assert.deepEqual(err, frame(topic, "phx_error", is18 ? { reason: "channel_crash" } : {}, null));
  c.send(null, "3", "phoenix", "heartbeat", {});
  assert.deepEqual(await c.reply("3"), reply("phoenix", "3", "ok", {}));
});

test("[A29][E103][f38] v1 disconnect_user: the socket closes (1.8: 1001, 1.7: 1000); a second user's socket stays", T(), async (t) => {
  const user = uniq("u");
  const target = await openRaw(t, `vsn=1.0.0&user_id=${user}`);
  const bystander = await openRaw(t, `vsn=1.0.0&user_id=${uniq("u")}`);
  const admin = await openRaw(t, V1);
  await admin.joinOk("1", "room:admin", { user: uniq("admin-") });
  admin.send(null, "2", "room:admin", "disconnect_user", { user_id: user });
  assert.deepEqual(await admin.reply("2"), reply("room:admin", "2", "ok", {}));
  assert.equal(await target.closeCode(), is18 ? 1001 : 1000);
  bystander.send(null, "9", "phoenix", "heartbeat", {});
  assert.deepEqual(await bystander.json(), reply("phoenix", "9", "ok", {}));
});

test("[f28][f27] v1 pipelined joins of different topics are answered in the order they were sent", T(), async (t) => {
  const c = await openRaw(t, V1);
  const base = uniq("private:");
  const n = 40;
  for (let i = 1; i <= n; i++) c.send(null, String(i), `${base}-${i}`, "phx_join", PRIVATE);
  await c.waitFor(() => c.frames.length >= n, 5000, `${n} join replies`);
  assert.equal(c.frames.map((f) => f.msg.ref).join(","), Array.from({ length: n }, (_, i) => String(i + 1)).join(","),
    "reply refs in arrival order: a Phoenix socket handles a join to completion before it reads the next frame");
});

test("[f17][f18] v1 join that carries a join_ref: replies and errors omit it, phx_error and phx_close have ref = that join_ref", T(), async (t) => {
  const c = await openRaw(t, V1);
  const topic = uniq("private:");
  const send = (m) => c.sendText(JSON.stringify({ topic, payload: {}, ...m }));
  send({ event: "phx_join", payload: PRIVATE, ref: "1", join_ref: "7" });
  assert.deepEqual(await c.json(), reply(topic, "1", "ok", { topic }));
  send({ event: "crash", ref: "2", join_ref: "7" });
  assert.deepEqual(await c.json(), frame(topic, "phx_error", is18 ? { reason: "channel_crash" } : {}, "7"));
  send({ event: "phx_join", payload: PRIVATE, ref: "3", join_ref: "9" });
  assert.deepEqual(await c.json(), reply(topic, "3", "ok", { topic }));
  send({ event: "phx_leave", ref: "4", join_ref: "9" });
  assert.deepEqual(await c.json(), reply(topic, "4", "ok", {}));
  assert.deepEqual(await c.json(), frame(topic, "phx_close", {}, "9"));
});
