// Presence as a client sees it on the wire, raw frames (vsn 2.0.0).
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { Raw, uniq } = require("../lib/harness");

const T = { timeout: 8000 };

/** Joins a room as `user` and returns the client and its presence_state. */
async function member(topic, user, meta = {}) {
  const c = await Raw.open();
  await c.join("1", topic, { user, meta });
  const state = (await c.event("presence_state"))[4];
  return { c, state };
}

/** Frames until a presence_diff matching pred. */
async function diffWhere(c, pred) {
  for (;;) {
    const d = (await c.event("presence_diff"))[4];
    if (pred(d)) return d;
  }
}

test("[H134][contract] presence_state lists the joiner with its meta, online_at and phx_ref", T, async () => {
  const topic = uniq("room:");
  const { c, state } = await member(topic, "alice", { device: "phone" });
  try {
    const metas = state.alice.metas;
    assert.equal(metas.length, 1);
    assert.equal(metas[0].device, "phone");
    assert.equal(typeof metas[0].online_at, "number");
    assert.equal(typeof metas[0].phx_ref, "string");
  } finally { c.close(); }
});

test("[H138] members get a presence_diff join when someone joins", T, async () => {
  const topic = uniq("room:");
  const a = await member(topic, "a");
  try {
    const b = await member(topic, "b");
    try {
      const d = await diffWhere(a.c, (d) => d.joins.b);
      assert.deepEqual(d.leaves, {});
      assert.equal(d.joins.b.metas.length, 1);
      assert.ok(b.state.a && b.state.b, "the joiner's state lists both");
    } finally { b.c.close(); }
  } finally { a.c.close(); }
});

test("[H139] a closed connection leaves at once", T, async () => {
  const topic = uniq("room:");
  const a = await member(topic, "a");
  const b = await member(topic, "b");
  try {
    const ref = b.state.b.metas[0].phx_ref;
    b.c.close();
    const d = await diffWhere(a.c, (d) => d.leaves.b);
    assert.equal(d.leaves.b.metas[0].phx_ref, ref);
  } finally { a.c.close(); }
});

test("[multi-device] one user key from two sockets: two metas under one key", T, async () => {
  const topic = uniq("room:");
  const phone = await member(topic, "carol", { device: "phone" });
  const laptop = await member(topic, "carol", { device: "laptop" });
  try {
    assert.equal(laptop.state.carol.metas.length, 2);
    laptop.c.close();
    const d = await diffWhere(phone.c, (d) => d.leaves.carol);
    assert.equal(d.leaves.carol.metas[0].device, "laptop");
  } finally { phone.c.close(); laptop.c.close(); }
});

test("[H145][165] update_meta: one diff, leave of the old ref and join with phx_ref_prev", T, async () => {
  const topic = uniq("room:");
  const { c, state } = await member(topic, "dan", { status: "online" });
  try {
    const old = state.dan.metas[0].phx_ref;
    c.send(JSON.stringify(["1", "5", topic, "update_meta", { status: "away" }]));
    const d = await diffWhere(c, (d) => d.leaves.dan && d.joins.dan);
    assert.equal(d.leaves.dan.metas[0].phx_ref, old);
    assert.equal(d.joins.dan.metas[0].phx_ref_prev, old);
    assert.notEqual(d.joins.dan.metas[0].phx_ref, old);
    assert.equal(d.joins.dan.metas[0].status, "away");
    assert.equal(typeof d.joins.dan.metas[0].online_at, "number");
    assert.deepEqual((await c.event("phx_reply"))[4], { response: {}, status: "ok" });
  } finally { c.close(); }
});

test("[phx_leave] leaving the channel removes the presence for others", T, async () => {
  const topic = uniq("room:");
  const a = await member(topic, "a");
  const b = await member(topic, "b");
  try {
    b.c.send(JSON.stringify(["1", "9", topic, "phx_leave", {}]));
    await diffWhere(a.c, (d) => d.leaves.b);
  } finally { a.c.close(); b.c.close(); }
});

test("[late joiner] a late joiner's state lists everyone", T, async () => {
  const topic = uniq("room:");
  const early = [];
  try {
    for (const u of ["u1", "u2", "u3"]) early.push(await member(topic, u));
    const late = await member(topic, "late");
    early.push(late);
    assert.deepEqual(Object.keys(late.state).sort(), ["late", "u1", "u2", "u3"]);
  } finally { early.forEach((m) => m.c.close()); }
});

test("[crash] a crashed channel's presence leaves", T, async () => {
  const topic = uniq("room:");
  const a = await member(topic, "a");
  const b = await member(topic, "b");
  try {
    b.c.send(JSON.stringify(["1", "3", topic, "crash", {}]));
    await diffWhere(a.c, (d) => d.leaves.b);
  } finally { a.c.close(); b.c.close(); }
});

test("[contract] a join without a user gets a server-chosen key", T, async () => {
  const topic = uniq("room:");
  const c = await Raw.open();
  try {
    await c.join("1", topic, {});
    const state = (await c.event("presence_state"))[4];
    assert.equal(Object.keys(state).length, 1);
  } finally { c.close(); }
});
