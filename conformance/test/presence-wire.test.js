// Presence as a client sees it on the wire (raw frames). Every case accepts every
// order Phoenix can produce: a joiner may get its own presence_diff before its
// presence_state, so the client's merged view (diffs held back until the state, as
// phoenix.js does) is what the cases look at, plus the exact payload shapes.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { openRaw } = require("../lib/raw");
const { uniq, T } = require("../lib/util");

/** Joins `topic` as `user` and waits until its presence view lists that user. */
async function member(t, topic, user, meta = {}, query = "vsn=2.0.0") {
  const c = await openRaw(t, query);
  const payload = { meta };
  if (user !== undefined) payload.user = user;
  await c.joinOk("1", topic, payload);
  if (user !== undefined) await c.presenceWhere(topic, (s) => s[user], 6000, `${user} in its own presence`);
  return c;
}

const MINUTES = 60 * 1000;

/** Checks a meta: the given fields, plus online_at (integer ms, server clock) and phx_ref, nothing else. */
function assertMeta(meta, given) {
  assert.deepEqual(Object.keys(meta).sort(), [...Object.keys(given), "online_at", "phx_ref"].sort(), JSON.stringify(meta));
  for (const [k, v] of Object.entries(given)) assert.deepEqual(meta[k], v);
  assert.ok(Number.isInteger(meta.online_at), "online_at is an integer: " + meta.online_at);
  assert.ok(Math.abs(meta.online_at - Date.now()) < 5 * MINUTES, "online_at is milliseconds since the epoch: " + meta.online_at);
  assert.equal(typeof meta.phx_ref, "string");
  assert.ok(meta.phx_ref.length > 0);
}

/** A presence_diff payload has exactly joins and leaves, each {key: {metas: [...]}}. */
function assertDiffShape(d) {
  assert.deepEqual(Object.keys(d).sort(), ["joins", "leaves"], JSON.stringify(d));
  for (const side of [d.joins, d.leaves]) {
    for (const p of Object.values(side)) {
      assert.deepEqual(Object.keys(p), ["metas"]);
      assert.ok(Array.isArray(p.metas) && p.metas.length > 0);
    }
  }
}

test("[H134][f63][f28] presence_state after the join reply; the meta is the given meta + online_at + phx_ref", T(), async (t) => {
  const topic = uniq("room:");
  const c = await openRaw(t);
  await c.joinOk("1", topic, { user: "alice", meta: { device: "phone", n: 2 } });
  await c.presenceWhere(topic, (s) => s.alice, 6000, "alice listed");
  const replyAt = c.frames.findIndex((f) => f.msg && f.msg.event === "phx_reply");
  const stateAt = c.frames.findIndex((f) => f.msg && f.msg.event === "presence_state");
  assert.ok(replyAt >= 0 && stateAt > replyAt, "the join reply comes before presence_state");
  const state = c.frames[stateAt].json;
  assert.deepEqual(state.slice(0, 4), ["1", null, topic, "presence_state"], "presence_state is a push: join_ref, ref null");
  // The state lists alice (tracked before the state was taken), or her own diff did.
  const self = state[4].alice || c.diffs(topic).map((d) => d.joins.alice).find(Boolean);
  assert.ok(self, "alice appears in presence_state or in her own presence_diff");
  assert.deepEqual(Object.keys(self), ["metas"]);
  assert.equal(self.metas.length, 1);
  assertMeta(self.metas[0], { device: "phone", n: 2 });
});

test("[H138][f64] members get presence_diff {joins: {key: {metas}}, leaves: {}} when someone joins", T(), async (t) => {
  const topic = uniq("room:");
  const a = await member(t, topic, "a");
  const b = await member(t, topic, "b", { role: "late" });
  const d = await a.diffWhere(topic, (x) => x.joins && x.joins.b, 6000, "a diff joining b");
  assertDiffShape(d);
  assert.deepEqual(d.leaves, {});
  assert.deepEqual(Object.keys(d.joins), ["b"]);
  assertMeta(d.joins.b.metas[0], { role: "late" });
  const bDiff = a.frames.find((f) => f.msg && f.msg.event === "presence_diff" && f.msg.payload.joins.b);
  assert.deepEqual(bDiff.json.slice(0, 4), [null, null, topic, "presence_diff"], "presence_diff is a broadcast: refs null");
  assert.deepEqual(Object.keys(b.presence(topic)).sort(), ["a", "b"]);
});

test("[H139][f40] a closed connection leaves at once, with the same phx_ref and meta", T(), async (t) => {
  const topic = uniq("room:");
  const a = await member(t, topic, "a");
  const b = await member(t, topic, "b", { k: 1 });
  await a.presenceWhere(topic, (s) => s.b, 6000, "a sees b");
  const joined = a.presence(topic).b.metas[0];
  b.close();
  const d = await a.diffWhere(topic, (x) => x.leaves && x.leaves.b, 6000, "b's leave");
  assertDiffShape(d);
  assert.deepEqual(d.leaves.b.metas, [joined]);
  assert.equal(a.presence(topic).b, undefined);
});

test("[A5][f30] phx_leave removes the presence for the others", T(), async (t) => {
  const topic = uniq("room:");
  const a = await member(t, topic, "a");
  const b = await member(t, topic, "b");
  b.send("1", "9", topic, "phx_leave", {});
  await b.event("phx_close", topic);
  await a.diffWhere(topic, (x) => x.leaves && x.leaves.b, 6000, "b's leave");
  await a.presenceWhere(topic, (s) => !s.b, 1000, "b gone");
});

test("[A22][H139] a crashed channel's presence leaves", T(), async (t) => {
  const topic = uniq("room:");
  const a = await member(t, topic, "a");
  const b = await member(t, topic, "b");
  b.send("1", "3", topic, "crash", {});
  await b.event("phx_error", topic);
  await a.diffWhere(topic, (x) => x.leaves && x.leaves.b, 6000, "b's leave after the crash");
});

test("[A29][f38] disconnect_user: the disconnected socket's presence leaves", T(), async (t) => {
  const topic = uniq("room:");
  const user = uniq("u");
  const a = await member(t, topic, "a");
  const victim = await openRaw(t, `vsn=2.0.0&user_id=${user}`);
  await victim.joinOk("1", topic, { user: "victim" });
  await a.presenceWhere(topic, (s) => s.victim, 6000, "victim listed");
  const admin = await openRaw(t);
  await admin.joinOk("1", "room:admin", { user: uniq("admin-") });
  admin.send("1", "2", "room:admin", "disconnect_user", { user_id: user });
  await victim.closeCode();
  await a.diffWhere(topic, (x) => x.leaves && x.leaves.victim, 6000, "victim's leave");
});

test("[H136][f63] multi-device: one key from two sockets holds two metas; one leaving removes only its meta", T(), async (t) => {
  const topic = uniq("room:");
  const phone = await member(t, topic, "carol", { device: "phone" });
  const laptop = await member(t, topic, "carol", { device: "laptop" });
  const both = await laptop.presenceWhere(topic, (s) => s.carol && s.carol.metas.length === 2, 6000, "two metas");
  assert.deepEqual(both.carol.metas.map((m) => m.device).sort(), ["laptop", "phone"]);
  await phone.presenceWhere(topic, (s) => s.carol && s.carol.metas.length === 2, 6000, "phone sees two metas");
  laptop.close();
  const d = await phone.diffWhere(topic, (x) => x.leaves && x.leaves.carol, 6000, "laptop's leave");
  assert.equal(d.leaves.carol.metas.length, 1);
  assert.equal(d.leaves.carol.metas[0].device, "laptop");
  const left = await phone.presenceWhere(topic, (s) => s.carol && s.carol.metas.length === 1, 1000, "one meta left");
  assert.equal(left.carol.metas[0].device, "phone");
});

test("[H145][I165][f65] update_meta: one diff, leave of the old meta + join of the new one with phx_ref_prev", T(), async (t) => {
  const topic = uniq("room:");
  const c = await member(t, topic, "dan", { status: "online" });
  const watcher = await member(t, topic, "w");
  await c.presenceWhere(topic, (s) => s.w, 6000, "watcher listed");
  const old = c.presence(topic).dan.metas[0];
  c.send("1", "5", topic, "update_meta", { status: "away" });
  assert.deepEqual(await c.reply("5"), ["1", "5", topic, "phx_reply", { status: "ok", response: {} }]);
  for (const who of [c, watcher]) {
    const d = await who.diffWhere(topic, (x) => x.leaves && x.leaves.dan, 6000, "the update diff");
    assertDiffShape(d);
    assert.deepEqual(Object.keys(d.joins), ["dan"], "the same diff joins dan again");
    assert.deepEqual(Object.keys(d.leaves), ["dan"]);
    assert.deepEqual(d.leaves.dan.metas, [old]);
    const neu = d.joins.dan.metas[0];
    assert.equal(d.joins.dan.metas.length, 1);
    assert.equal(neu.status, "away");
    assert.equal(neu.phx_ref_prev, old.phx_ref);
    assert.notEqual(neu.phx_ref, old.phx_ref);
    assert.ok(Number.isInteger(neu.online_at));
    assert.deepEqual(Object.keys(neu).sort(), ["online_at", "phx_ref", "phx_ref_prev", "status"]);
    const view = who.presence(topic);
    assert.equal(view.dan.metas.length, 1);
    assert.equal(view.dan.metas[0].status, "away");
  }
});

test("[late joiner][H136] a late joiner's presence lists every member", T(), async (t) => {
  const topic = uniq("room:");
  for (const u of ["u1", "u2", "u3"]) await member(t, topic, u);
  const late = await member(t, topic, "late");
  const view = await late.presenceWhere(topic, (s) => Object.keys(s).length === 4, 6000, "four members");
  assert.deepEqual(Object.keys(view).sort(), ["late", "u1", "u2", "u3"]);
  const state = late.frames.find((f) => f.msg && f.msg.event === "presence_state").msg.payload;
  for (const u of ["u1", "u2", "u3"]) assert.ok(state[u], `presence_state itself lists ${u}`);
});

test("[H133][contract] presence is per topic: members of another room are not listed", T(), async (t) => {
  const a = uniq("room:"), b = uniq("room:");
  await member(t, a, "in-a");
  const c = await member(t, b, "in-b");
  assert.deepEqual(Object.keys(c.presence(b)), ["in-b"]);
});

test("[contract][H135] a join without a user gets one string key of the server's choosing", T(), async (t) => {
  const topic = uniq("room:");
  const c = await member(t, topic, undefined);
  const view = await c.presenceWhere(topic, (s) => Object.keys(s).length === 1, 6000, "one key");
  const [key] = Object.keys(view);
  assert.equal(typeof key, "string");
  assert.ok(key.length > 0);
  assert.equal(view[key].metas.length, 1);
});

test("[f17] presence over vsn 1.0.0: objects, ref null", T(), async (t) => {
  const topic = uniq("room:");
  const c = await member(t, topic, "v1user", {}, "vsn=1.0.0");
  const other = await member(t, topic, "v2user");
  await c.presenceWhere(topic, (s) => s.v2user, 6000, "v2user listed");
  const state = c.frames.find((f) => f.msg && f.msg.event === "presence_state").json;
  assert.deepEqual(Object.keys(state).sort(), ["event", "payload", "ref", "topic"]);
  assert.equal(state.ref, null);
  const diff = c.frames.find((f) => f.msg && f.msg.event === "presence_diff" && f.msg.payload.joins.v2user).json;
  assert.deepEqual(Object.keys(diff).sort(), ["event", "payload", "ref", "topic"]);
  assert.equal(diff.ref, null);
  other.close();
});

test("[contract] private channels have no presence; update_meta replies ok {}", T(), async (t) => {
  const topic = uniq("private:");
  const c = await openRaw(t);
  await c.joinOk("1", topic, { token: "letmein", user: "p" });
  c.send("1", "2", topic, "update_meta", { x: 1 });
  assert.deepEqual(await c.reply("2"), ["1", "2", topic, "phx_reply", { status: "ok", response: {} }]);
  assert.equal(c.frames.some((f) => f.msg && /^presence_/.test(f.msg.event)), false);
  assert.equal(await c.silent(300, (m) => /^presence_/.test(m.event)), true, "no presence frames on private topics");
});

test("[f29][contract] after a duplicate join the presence is tracked once, and a fresh presence_state arrives", T(), async (t) => {
  const topic = uniq("room:");
  const watcher = await member(t, topic, "w");
  const c = await member(t, topic, "dup");
  c.send("2", "2", topic, "phx_join", { user: "dup" });
  await c.waitFor(() => (c.stateCount.get(topic) || 0) >= 2, 6000, "a second presence_state");
  const fresh = c.frames.filter((f) => f.msg && f.msg.event === "presence_state").pop();
  assert.equal(fresh.msg.join_ref, "2", "the new state is pushed on the new join");
  await watcher.presenceWhere(topic, (s) => s.dup && s.dup.metas.length === 1, 6000, "dup tracked once");
  // Settle: the old channel's leave and the new join may arrive in either order.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(watcher.presence(topic).dup.metas.length, 1);
});
