// More presence on the wire (raw frames): updates when one key has several metas,
// chains of updates, what a late joiner sees of an updated meta, and a rejoin after
// a crash. Like presence-wire.test.js, the cases read the client's merged view (diffs
// held back until presence_state, as phoenix.js does), so every order Phoenix can
// produce is accepted.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { openRaw } = require("../lib/raw");
const { uniq, T } = require("../lib/util");

/** Joins `topic` as `user` and waits until its presence view lists that user. */
async function member(t, topic, user, meta = {}, joinRef = "1") {
  const c = await openRaw(t);
  await c.joinOk(joinRef, topic, { user, meta });
  await c.presenceWhere(topic, (s) => s[user], 6000, `${user} in its own presence`);
  return c;
}

const devices = (state, key) => (state[key] ? state[key].metas.map((m) => m.device).sort() : []);

test("[H136][H145][f65] multi-device update_meta: the diff leaves and joins only that device's meta", T(), async (t) => {
  const topic = uniq("room:");
  const phone = await member(t, topic, "erin", { device: "phone" });
  const laptop = await member(t, topic, "erin", { device: "laptop" });
  await phone.presenceWhere(topic, (s) => devices(s, "erin").length === 2, 6000, "two metas at the phone");
  const before = phone.presence(topic).erin.metas.find((m) => m.device === "laptop");
  laptop.send("1", "7", topic, "update_meta", { device: "laptop", lid: "closed" });
  assert.deepEqual(await laptop.reply("7"), ["1", "7", topic, "phx_reply", { status: "ok", response: {} }]);
  const d = await phone.diffWhere(topic, (x) => x.leaves && x.leaves.erin, 6000, "the update diff");
  assert.deepEqual(d.leaves.erin.metas, [before], "only the laptop's old meta leaves");
  assert.equal(d.joins.erin.metas.length, 1, "only the laptop's new meta joins");
  assert.equal(d.joins.erin.metas[0].lid, "closed");
  assert.equal(d.joins.erin.metas[0].phx_ref_prev, before.phx_ref);
  const now = await phone.presenceWhere(topic, (s) => s.erin && s.erin.metas.some((m) => m.lid === "closed"), 6000, "the new meta");
  assert.deepEqual(devices(now, "erin"), ["laptop", "phone"]);
  assert.equal(now.erin.metas.find((m) => m.device === "phone").lid, undefined, "the phone's meta is untouched");
});

test("[I165][f65] two updates in a row: each new meta's phx_ref_prev is the ref it replaced", T(), async (t) => {
  const topic = uniq("room:");
  const c = await member(t, topic, "fay", { v: 0 });
  const r0 = c.presence(topic).fay.metas[0].phx_ref;
  c.send("1", "2", topic, "update_meta", { v: 1 });
  await c.reply("2");
  const first = await c.presenceWhere(topic, (s) => s.fay && s.fay.metas[0].v === 1, 6000, "v1");
  const m1 = first.fay.metas[0];
  assert.equal(m1.phx_ref_prev, r0);
  c.send("1", "3", topic, "update_meta", { v: 2 });
  await c.reply("3");
  const second = await c.presenceWhere(topic, (s) => s.fay && s.fay.metas[0].v === 2, 6000, "v2");
  const m2 = second.fay.metas[0];
  assert.equal(second.fay.metas.length, 1);
  assert.equal(m2.phx_ref_prev, m1.phx_ref);
  assert.notEqual(m2.phx_ref, m1.phx_ref);
  const d = c.diffs(topic).filter((x) => x.leaves.fay);
  assert.equal(d.length, 2, "one diff per update");
  assert.equal(d[1].leaves.fay.metas[0].phx_ref, m1.phx_ref, "the second update leaves the first update's meta");
});

test("[H134][f63] a late joiner's presence_state shows an updated meta with its phx_ref_prev", T(), async (t) => {
  const topic = uniq("room:");
  const c = await member(t, topic, "gus", { mood: "ok" });
  const r0 = c.presence(topic).gus.metas[0].phx_ref;
  c.send("1", "2", topic, "update_meta", { mood: "great" });
  await c.reply("2");
  const updated = await c.presenceWhere(topic, (s) => s.gus && s.gus.metas[0].mood === "great", 6000, "the update");
  const late = await member(t, topic, "late");
  const state = late.frames.find((f) => f.msg && f.msg.event === "presence_state").msg.payload;
  assert.ok(state.gus, "gus is in the late joiner's presence_state");
  assert.deepEqual(state.gus.metas, updated.gus.metas, "the same meta, refs included");
  assert.equal(state.gus.metas[0].phx_ref_prev, r0);
});

test("[A22][J213][f33] raw rejoin after a crash: a fresh presence_state, the key tracked once", T(), async (t) => {
  const topic = uniq("room:");
  const watcher = await member(t, topic, "watch");
  const c = await member(t, topic, "hal", {}, "1");
  await watcher.presenceWhere(topic, (s) => s.hal, 6000, "hal listed");
  c.send("1", "2", topic, "crash", {});
  await c.event("phx_error", topic);
  await watcher.presenceWhere(topic, (s) => !s.hal, 6000, "hal gone after the crash");
  c.send("3", "3", topic, "phx_join", { user: "hal" });
  const again = await c.reply("3");
  assert.deepEqual(again, ["3", "3", topic, "phx_reply", { status: "ok", response: { topic } }]);
  const state = await c.nextWhere((m) => m.event === "presence_state", 6000, "a second presence_state");
  assert.equal(state.json[0], "3", "the new presence_state carries the new join_ref");
  await watcher.presenceWhere(topic, (s) => s.hal && s.hal.metas.length === 1, 6000, "hal back, once");
});
