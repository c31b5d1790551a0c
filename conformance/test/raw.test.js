// Cases that need exact wire frames: a raw WebSocket client, both serializers.
// Each title names the upstream behaviour (phoenix-test-behaviors.md) or the contract.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { Raw, uniq } = require("../lib/harness");

const T = { timeout: 8000 };

async function withRaw(query, fn) {
  const c = await Raw.open(query);
  try { return await fn(c); } finally { c.close(); }
}

test("[A32] v2 heartbeat reply is exact", T, () => withRaw("vsn=2.0.0", async (c) => {
  c.send('[null,"1","phoenix","heartbeat",{}]');
  assert.equal(await c.text(), '[null,"1","phoenix","phx_reply",{"response":{},"status":"ok"}]');
}));

test("[A32] v1 heartbeat reply is exact", T, () => withRaw("vsn=1.0.0", async (c) => {
  c.send('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}');
  assert.deepEqual(await c.json(), { event: "phx_reply", payload: { response: {}, status: "ok" }, ref: "1", topic: "phoenix" });
}));

test("[A34] v2 join of an unmatched topic: error with null join_ref", T, () => withRaw("vsn=2.0.0", async (c) => {
  c.send('["1","1","unmatched-topic","phx_join",{}]');
  assert.deepEqual(await c.json(), [null, "1", "unmatched-topic", "phx_reply", { response: { reason: "unmatched topic" }, status: "error" }]);
}));

test("[A34] v1 join of an unmatched topic", T, () => withRaw("vsn=1.0.0", async (c) => {
  c.send('{"topic":"unmatched-topic","event":"phx_join","payload":{},"ref":"1"}');
  const v = await c.json();
  assert.equal(v.ref, "1");
  assert.deepEqual(v.payload, { response: { reason: "unmatched topic" }, status: "error" });
  assert.equal("join_ref" in v, false);
}));

test("[A24] v2 event on a topic never joined", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("room:");
  for (const ref of ["5", "6"]) {
    c.send(JSON.stringify(["1", ref, topic, "echo", {}]));
    assert.deepEqual(await c.json(), [null, ref, topic, "phx_reply", { response: { reason: "unmatched topic" }, status: "error" }]);
  }
}));

test("[A24] v1 event on a topic never joined", T, () => withRaw("vsn=1.0.0", async (c) => {
  c.send('{"topic":"room:nope-v1","event":"echo","payload":{},"ref":"9"}');
  const v = await c.json();
  assert.deepEqual(v.payload.response, { reason: "unmatched topic" });
}));

test("[A2][contract] v2 join reply echoes refs with {topic}", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("room:");
  c.send(JSON.stringify(["11", "1", topic, "phx_join", {}]));
  assert.deepEqual(await c.event("phx_reply"), ["11", "1", topic, "phx_reply", { response: { topic }, status: "ok" }]);
}));

test("[A1][contract] v1 join reply has no join_ref", T, () => withRaw("vsn=1.0.0", async (c) => {
  const topic = uniq("room:");
  c.send(JSON.stringify({ topic, event: "phx_join", payload: {}, ref: "1" }));
  const v = await c.event("phx_reply");
  assert.deepEqual(v, { event: "phx_reply", payload: { response: { topic }, status: "ok" }, ref: "1", topic });
}));

test("[contract] private join without the token is refused", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  assert.deepEqual(await c.join("1", topic, { token: "nope" }), ["1", "1", topic, "phx_reply", { response: { reason: "unauthorized" }, status: "error" }]);
}));

test("[contract] private join with the token works and echoes", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  assert.equal((await c.join("1", topic, { token: "letmein" }))[4].status, "ok");
  c.send(JSON.stringify(["1", "2", topic, "echo", { a: [1, 2] }]));
  assert.deepEqual(await c.event("phx_reply"), ["1", "2", topic, "phx_reply", { response: { a: [1, 2] }, status: "ok" }]);
}));

test("[contract] echo_error replies error with the payload", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("1", topic, { token: "letmein" });
  c.send(JSON.stringify(["1", "2", topic, "echo_error", { why: "x" }]));
  assert.deepEqual(await c.event("phx_reply"), ["1", "2", topic, "phx_reply", { response: { why: "x" }, status: "error" }]);
}));

test("[contract] unknown events get {reason: unhandled event}", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("1", topic, { token: "letmein" });
  c.send(JSON.stringify(["1", "2", topic, "what_is_this", {}]));
  assert.deepEqual((await c.event("phx_reply"))[4], { response: { reason: "unhandled event" }, status: "error" });
}));

test("[contract] noreply sends nothing", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("1", topic, { token: "letmein" });
  c.send(JSON.stringify(["1", "2", topic, "noreply", {}]));
  assert.equal(await c.silent(400), true);
}));

test("[A5] v2 leave: reply, then phx_close with ref = join_ref", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("3", topic, { token: "letmein" });
  c.send(JSON.stringify(["3", "4", topic, "phx_leave", {}]));
  assert.deepEqual(await c.json(), ["3", "4", topic, "phx_reply", { response: {}, status: "ok" }]);
  assert.deepEqual(await c.json(), ["3", "3", topic, "phx_close", {}]);
}));

test("[A6] after leaving, events get unmatched topic", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("3", topic, { token: "letmein" });
  c.send(JSON.stringify(["3", "4", topic, "phx_leave", {}]));
  await c.event("phx_close");
  c.send(JSON.stringify(["3", "5", topic, "echo", {}]));
  assert.deepEqual(await c.json(), [null, "5", topic, "phx_reply", { response: { reason: "unmatched topic" }, status: "error" }]);
}));

test("[C77] v1 leave: phx_close carries ref null", T, () => withRaw("vsn=1.0.0", async (c) => {
  const topic = uniq("private:");
  c.send(JSON.stringify({ topic, event: "phx_join", payload: { token: "letmein" }, ref: "1" }));
  await c.event("phx_reply");
  c.send(JSON.stringify({ topic, event: "phx_leave", payload: {}, ref: "2" }));
  assert.equal((await c.json()).event, "phx_reply");
  assert.deepEqual(await c.json(), { event: "phx_close", payload: {}, ref: null, topic });
}));

test("[leave] leaving a topic not joined is ok, echoing refs", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("room:");
  c.send(JSON.stringify(["7", "8", topic, "phx_leave", {}]));
  assert.deepEqual(await c.json(), ["7", "8", topic, "phx_reply", { response: {}, status: "ok" }]);
}));

test("[A30] duplicate join: new reply, then phx_close for the old join_ref", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("1", topic, { token: "letmein" });
  c.send(JSON.stringify(["2", "2", topic, "phx_join", { token: "letmein" }]));
  assert.deepEqual(await c.json(), ["2", "2", topic, "phx_reply", { response: { topic }, status: "ok" }]);
  assert.deepEqual(await c.json(), ["1", "1", topic, "phx_close", {}]);
}));

test("[31 (1.8)] messages with a stale join_ref are dropped", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("5", topic, { token: "letmein" });
  c.send(JSON.stringify(["4", "6", topic, "echo", {}]));
  c.send(JSON.stringify(["4", "7", topic, "phx_leave", {}]));
  assert.equal(await c.silent(400), true);
  c.send(JSON.stringify([null, "8", topic, "echo", { ok: 1 }]));
  assert.deepEqual((await c.json())[4], { response: { ok: 1 }, status: "ok" });
}));

test("[A22] v2 crash: phx_error {reason: channel_crash}, other channels untouched", T, () => withRaw("vsn=2.0.0", async (c) => {
  const a = uniq("private:"), b = uniq("private:");
  await c.join("1", a, { token: "letmein" });
  await c.join("2", b, { token: "letmein" });
  c.send(JSON.stringify(["1", "3", a, "crash", {}]));
  assert.deepEqual(await c.event("phx_error"), ["1", "1", a, "phx_error", { reason: "channel_crash" }]);
  c.send(JSON.stringify(["2", "4", b, "echo", { still: true }]));
  assert.deepEqual((await c.event("phx_reply"))[4], { response: { still: true }, status: "ok" });
}));

test("[C75] v1 crash: phx_error with ref null", T, () => withRaw("vsn=1.0.0", async (c) => {
  const topic = uniq("private:");
  c.send(JSON.stringify({ topic, event: "phx_join", payload: { token: "letmein" }, ref: "1" }));
  await c.event("phx_reply");
  c.send(JSON.stringify({ topic, event: "crash", payload: {}, ref: "2" }));
  const v = await c.event("phx_error");
  assert.equal(v.ref, null);
  assert.equal(v.topic, topic);
}));

test("[A38] stop: phx_close with {}", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("1", topic, { token: "letmein" });
  c.send(JSON.stringify(["1", "2", topic, "stop", {}]));
  assert.deepEqual(await c.json(), ["1", "1", topic, "phx_close", {}]);
}));

test("[A3] shout: a broadcast with null join_ref and ref, sender included", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("1", topic, { token: "letmein" });
  c.send(JSON.stringify(["1", "2", topic, "shout", { n: 1 }]));
  assert.deepEqual(await c.event("shout"), [null, null, topic, "shout", { n: 1 }]);
}));

test("[G127] shout_others skips the sender only", T, async () => {
  const topic = uniq("private:");
  const a = await Raw.open(), b = await Raw.open("vsn=1.0.0");
  try {
    await a.join("1", topic, { token: "letmein" });
    b.send(JSON.stringify({ topic, event: "phx_join", payload: { token: "letmein" }, ref: "1" }));
    await b.event("phx_reply");
    a.send(JSON.stringify(["1", "2", topic, "shout_others", { n: 2 }]));
    assert.deepEqual(await b.event("shout"), { event: "shout", payload: { n: 2 }, ref: null, topic });
    assert.deepEqual((await a.event("phx_reply"))[4], { response: {}, status: "ok" });
    assert.equal(await a.silent(300), true);
  } finally { a.close(); b.close(); }
});

test("[G129][contract] push_me: a push carrying the join_ref and a null ref", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("4", topic, { token: "letmein" });
  c.send(JSON.stringify(["4", "5", topic, "push_me", { event: "hello", payload: { x: 1 } }]));
  assert.deepEqual(await c.json(), ["4", null, topic, "hello", { x: 1 }]);
  c.send(JSON.stringify(["4", "6", topic, "push_me", { event: "empty" }]));
  assert.deepEqual(await c.json(), ["4", null, topic, "empty", {}]);
}));

test("[contract] room:admin broadcast reaches another topic", T, async () => {
  const topic = uniq("private:");
  const admin = await Raw.open(), member = await Raw.open();
  try {
    await member.join("1", topic, { token: "letmein" });
    await admin.join("1", "room:admin", {});
    admin.send(JSON.stringify(["1", "2", "room:admin", "broadcast", { topic, event: "news", payload: { v: 3 } }]));
    assert.deepEqual(await member.event("news"), [null, null, topic, "news", { v: 3 }]);
  } finally { admin.close(); member.close(); }
});

test("[A29][103] disconnect_user closes every socket of the user with 1001", T, async () => {
  const user = uniq("u");
  const a = await Raw.open(`vsn=2.0.0&user_id=${user}`), b = await Raw.open(`vsn=1.0.0&user_id=${user}`);
  const admin = await Raw.open();
  try {
    await admin.join("1", "room:admin", {});
    admin.send(JSON.stringify(["1", "2", "room:admin", "disconnect_user", { user_id: user }]));
    assert.equal(await a.closeCode(), 1001);
    assert.equal(await b.closeCode(), 1001);
    admin.send('[null,"3","phoenix","heartbeat",{}]');
    await admin.event("phx_reply");
  } finally { a.close(); b.close(); admin.close(); }
});

test("[A31] vsn=123.1.1 is refused with 403", T, async () => {
  assert.equal(await Raw.status("vsn=123.1.1"), 403);
});

test("[vsn] vsn=2.1.0 is refused with 403; 2.0.0 and 1.0.0 open", T, async () => {
  assert.equal(await Raw.status("vsn=2.1.0"), 403);
  assert.equal(await Raw.status("vsn=2.0.0"), "open");
  assert.equal(await Raw.status("vsn=1.0.0"), "open");
});

test("[A27][contract] reject=1 refuses the upgrade with 403", T, async () => {
  assert.equal(await Raw.status("vsn=2.0.0&reject=1"), 403);
});

test("[A39] binary_echo: exact binary reply frame (vsn 2.0.0)", T, () => withRaw("vsn=2.0.0", async (c) => {
  const topic = uniq("private:");
  await c.join("11", topic, { token: "letmein" });
  const head = Buffer.from([0, 2, 1, Buffer.byteLength(topic), "binary_echo".length]);
  c.sendBinary(Buffer.concat([head, Buffer.from("11"), Buffer.from("2"), Buffer.from(topic), Buffer.from("binary_echo"), Buffer.from([1, 2, 3])]));
  const f = await c.next();
  const want = Buffer.concat([Buffer.from([1, 2, 1, Buffer.byteLength(topic), 2]), Buffer.from("11"), Buffer.from("2"), Buffer.from(topic), Buffer.from("ok"), Buffer.from([1, 2, 3])]);
  assert.deepEqual(f.binary, want);
}));

for (const [name, frame, query] of [
  ["invalid JSON", "{nope", "vsn=2.0.0"],
  ["a four-element array", '["1","2","t","e"]', "vsn=2.0.0"],
  ["an array on a v1 socket", '[null,"1","phoenix","heartbeat",{}]', "vsn=1.0.0"],
  ["a truncated binary frame", Buffer.from([0, 9, 9]), "vsn=2.0.0"],
]) {
  test(`[2.5] malformed frame (${name}) closes only that connection`, T, async () => {
    const bad = await Raw.open(query), good = await Raw.open();
    try {
      if (Buffer.isBuffer(frame)) bad.sendBinary(frame); else bad.send(frame);
      const code = await bad.closeCode();
      assert.notEqual(code, 1000, "the client must be told to reconnect");
      good.send('[null,"1","phoenix","heartbeat",{}]');
      assert.equal((await good.json())[3], "phx_reply");
    } finally { bad.close(); good.close(); }
  });
}

test("[fan-out] 200 clients all receive 20 shouts, in order", { timeout: 30000 }, async () => {
  const topic = uniq("private:");
  const subs = await Promise.all(Array.from({ length: 200 }, () => Raw.open()));
  try {
    await Promise.all(subs.map((s) => s.join("1", topic, { token: "letmein" })));
    const got = subs.map(() => []);
    const done = subs.map((s, i) => (async () => {
      while (got[i].length < 20) {
        const v = await s.event("shout", 15000);
        got[i].push(v[4].n);
      }
    })());
    const sender = await Raw.open();
    try {
      await sender.join("1", topic, { token: "letmein" });
      for (let n = 0; n < 20; n++) sender.send(JSON.stringify(["1", String(n + 2), topic, "shout", { n }]));
      await Promise.all(done);
    } finally { sender.close(); }
    const want = Array.from({ length: 20 }, (_, n) => n);
    for (const g of got) assert.deepEqual(g, want);
  } finally { subs.forEach((s) => s.close()); }
});
