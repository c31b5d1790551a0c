// Connection refusal, vsn negotiation, binary frames byte for byte, malformed and
// large input: raw WebSocket cases.
"use strict";
const test = require("../lib/case");
const { only18 } = test;
const assert = require("node:assert/strict");
const { Raw, openRaw, binaryPush, binaryReply } = require("../lib/raw");
const { uniq, T } = require("../lib/util");

const PRIVATE = { token: "letmein" };

// ---- refusal and vsn ---------------------------------------------------------------

test("[A27][contract] reject=1 refuses the upgrade with HTTP 403 (both vsns); other params are accepted", T(), async () => {
  assert.equal(await Raw.status("vsn=2.0.0&reject=1"), 403);
  assert.equal(await Raw.status("vsn=1.0.0&reject=1"), 403);
  assert.equal(await Raw.status("vsn=2.0.0&reject=0&anything=else"), "open");
});

test("[A31][f4] vsn=123.1.1 is refused with HTTP 403", T(), async () => {
  assert.equal(await Raw.status("vsn=123.1.1"), 403);
});

test("[f4] vsn outside ~> 1.0.0 / ~> 2.0.0 (2.1.0, 3.0.0, abc) is refused with 403", T(), async () => {
  for (const vsn of ["2.1.0", "3.0.0", "abc"]) assert.equal(await Raw.status(`vsn=${vsn}`), 403, `vsn=${vsn}`);
});

test("[f4] vsn 1.0.0, 2.0.0 and versions matching ~> x.0.0 (1.0.5, 2.0.1) are accepted", T(), async () => {
  for (const vsn of ["1.0.0", "2.0.0", "1.0.5", "2.0.1"]) assert.equal(await Raw.status(`vsn=${vsn}`), "open", `vsn=${vsn}`);
});

test("[f4] no vsn at all means 1.0.0: frames are JSON objects", T(), async (t) => {
  const c = await openRaw(t, "");
  c.sendText(JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1" }));
  assert.deepEqual(await c.json(), { topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} }, ref: "1" });
});

test("[B41][f5] a plain GET (no upgrade) of <mount>/websocket is answered 400", T(), async () => {
  const http = require("node:http");
  const { wsUrl } = require("../lib/raw");
  const url = wsUrl("vsn=2.0.0").replace(/^ws/, "http");
  const code = await new Promise((resolve, reject) => {
    http.get(url, (res) => { res.resume(); resolve(res.statusCode); }).on("error", reject);
  });
  assert.equal(code, 400);
});

// Phoenix checks origin, subprotocols, vsn and runs `connect` before websock_adapter
// looks at the upgrade headers (protocol-spec/socket.md, "The handshake"): a plain GET
// is refused with 403 when the vsn or `connect` refuses it, and only an accepted one
// gets the 400.
function plainGet(query) {
  const http = require("node:http");
  const { wsUrl } = require("../lib/raw");
  const url = wsUrl(query).replace(/^ws/, "http");
  return new Promise((resolve, reject) => {
    http.get(url, (res) => { res.resume(); resolve(res.statusCode); }).on("error", reject);
  });
}

test("[spec] a plain GET with an unsupported vsn is 403, not 400: vsn comes before the upgrade headers", T(), async () => {
  assert.equal(await plainGet("vsn=3.0.0"), 403);
});

test("[spec] a plain GET that connect refuses (reject=1) is 403, not 400: connect runs before the upgrade headers", T(), async () => {
  assert.equal(await plainGet("vsn=2.0.0&reject=1"), 403);
});

test("[spec] a frame that is not a Phoenix message closes the socket with 1011 (Bandit's code when the serializer raises)", T(), async (t) => {
  for (const [query, bad] of [["vsn=2.0.0", "{not json"], ["vsn=2.0.0", '["1","2","t","e"]'], ["vsn=1.0.0", '[null,"1","phoenix","heartbeat",{}]']]) {
    const c = await openRaw(t, query);
    c.sendText(bad);
    assert.equal(await c.closeCode(), 1011, `${query} ${bad}`);
  }
});

test("[spec] V1: a key given twice keeps its first value (Jason's decoder)", T(), async (t) => {
  const c = await openRaw(t, "vsn=1.0.0");
  c.sendText('{"topic":"phoenix","topic":"nowhere","event":"heartbeat","payload":{},"ref":"7","ref":"8"}');
  assert.deepEqual(await c.json(), { topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} }, ref: "7" });
});

// ---- binary frames (vsn 2.0.0) ---------------------------------------------------------

test("[A39][E94][f22] binary_echo: the reply is a binary kind-1 frame, byte for byte", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("11", topic, PRIVATE);
  c.sendBinary(binaryPush("11", "2", topic, "binary_echo", [1, 2, 3, 0, 255]));
  const f = await c.next();
  assert.ok(f.bytes, "expected a binary frame, got " + f.text);
  assert.deepEqual(f.bytes, binaryReply("11", "2", topic, "ok", [1, 2, 3, 0, 255]));
});

test("[A39][E97] binary_echo of an empty payload and of 64 KiB round-trips exactly", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("room:");
  await c.joinOk("3", topic, { user: "bin" });
  c.sendBinary(binaryPush("3", "4", topic, "binary_echo", []));
  const empty = await c.nextWhere((m, f) => f.bytes !== undefined, 6000, "a binary frame");
  assert.deepEqual(empty.bytes, binaryReply("3", "4", topic, "ok", []));
  const big = Buffer.alloc(65536);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  c.sendBinary(binaryPush("3", "5", topic, "binary_echo", big));
  const f = await c.nextWhere((m, fr) => fr.bytes !== undefined, 6000, "a binary frame");
  assert.deepEqual(f.bytes, binaryReply("3", "5", topic, "ok", big));
});

test("[f19] a binary push on a topic never joined: unmatched topic (text reply)", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("room:");
  c.sendBinary(binaryPush("1", "2", topic, "binary_echo", [1]));
  assert.deepEqual(await c.json(), [null, "2", topic, "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);
});

// ---- malformed input closes only the offending connection ---------------------------------

for (const [name, query, frame] of [
  ["invalid JSON", "vsn=2.0.0", "{nope"],
  ["a four-element array", "vsn=2.0.0", '["1","2","room:x","echo"]'],
  ["a JSON object on a vsn 2.0.0 socket", "vsn=2.0.0", '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}'],
  ["a JSON array on a vsn 1.0.0 socket", "vsn=1.0.0", '[null,"1","phoenix","heartbeat",{}]'],
  ["a V1 object without ref", "vsn=1.0.0", '{"topic":"phoenix","event":"heartbeat","payload":{}}'],
  ["a truncated binary frame", "vsn=2.0.0", Buffer.from([0, 9, 9])],
  ["a binary frame whose sizes point past its end", "vsn=2.0.0", Buffer.from([0, 1, 1, 40, 4, 0x31, 0x32])],
  ["a binary reply frame (kind 1) from a client", "vsn=2.0.0", binaryReply("1", "2", "room:x", "ok", [1])],
]) {
  test(`[f24][2.5] malformed: ${name} closes that connection (code not 1000), others keep working`, T(), async (t) => {
    const bad = await openRaw(t, query), good = await openRaw(t);
    const topic = uniq("private:");
    await good.joinOk("1", topic, PRIVATE);
    if (Buffer.isBuffer(frame)) bad.sendBinary(frame); else bad.sendText(frame);
    const code = await bad.closeCode();
    assert.notEqual(code, 1000, "a 1000 close would stop the stock client from reconnecting");
    assert.equal(bad.frames.filter((f) => f.msg && f.msg.event === "phx_reply").length, 0, "a malformed frame gets no reply");
    good.send("1", "2", topic, "echo", { fine: true });
    assert.deepEqual(await good.json(), ["1", "2", topic, "phx_reply", { status: "ok", response: { fine: true } }]);
  });
}

// ---- long names and large frames ---------------------------------------------------------

test("[E96] a 300-byte event name is fine over text: the room answers unhandled event", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  const event = "e".repeat(300);
  c.send("1", "2", topic, event, {});
  assert.deepEqual(await c.json(), ["1", "2", topic, "phx_reply", { status: "error", response: { reason: "unhandled event" } }]);
});

test("[E96] push_me with a 300-byte event name arrives as a text push", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  const event = "ü".repeat(150); // 300 bytes of UTF-8
  c.send("1", "2", topic, "push_me", { event, payload: { long: true } });
  assert.deepEqual(await c.json(), ["1", null, topic, event, { long: true }]);
});

test("[f12] a 512 KiB text frame (echo) round-trips", T(10000), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  const body = { blob: "x".repeat(512 * 1024) };
  c.send("1", "2", topic, "echo", body);
  assert.deepEqual(await c.json(8000), ["1", "2", topic, "phx_reply", { status: "ok", response: body }]);
});

// ---- protocol edges (issue 11) -------------------------------------------------------

test("[I11][f17] vsn 1.0.0: a binary WebSocket frame carrying V1 JSON is handled like a text frame", T(), async (t) => {
  // Phoenix's V1 serializer decodes the frame's bytes as JSON whatever the opcode.
  const c = await openRaw(t, "vsn=1.0.0");
  const topic = uniq("private:");
  c.sendBinary(Buffer.from(JSON.stringify({ topic, event: "phx_join", payload: PRIVATE, ref: "1" })));
  assert.deepEqual(await c.json(), { topic, event: "phx_reply", payload: { status: "ok", response: { topic } }, ref: "1" });
  c.sendBinary(Buffer.from(JSON.stringify({ topic, event: "echo", payload: { via: "binary" }, ref: "2" })));
  assert.deepEqual(await c.json(), { topic, event: "phx_reply", payload: { status: "ok", response: { via: "binary" } }, ref: "2" });
  c.sendBinary(Buffer.from(JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "3" })));
  assert.deepEqual(await c.json(), { topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} }, ref: "3" });
});

test("[I11][f19] V2 binary push with an empty ref: the ref stays \"\" (not null) in the reply", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  // An event the channel does not handle gets a text reply, where "" and null differ.
  c.sendBinary(binaryPush("1", "", topic, "whatever", [1]));
  const f = await c.nextWhere((m) => m.event === "phx_reply", 6000, "the reply");
  assert.equal(f.text, JSON.stringify(["1", "", topic, "phx_reply", { response: { reason: "unhandled event" }, status: "error" }]));
  // binary_echo: a binary reply whose ref field is empty.
  c.sendBinary(binaryPush("1", "", topic, "binary_echo", [4, 2]));
  const b = await c.nextWhere((m, fr) => fr.bytes !== undefined, 6000, "the binary reply");
  assert.deepEqual(b.bytes, binaryReply("1", "", topic, "ok", [4, 2]));
});

test("[I11][f31][f19] V2 binary push with an empty join_ref on a channel joined as \"1\": a stale join_ref, dropped",
  only18("Phoenix 1.7 forwards it to the channel regardless of its join_ref (see the {1.7} case)", T()), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  c.sendBinary(binaryPush("", "2", topic, "binary_echo", [7]));
  c.sendBinary(binaryPush("", "3", topic, "echo_me_not", [7]));
  assert.equal(await c.silent(500), true, "\"\" is a join_ref, not a missing one: it differs from \"1\", so the push is dropped");
  c.sendBinary(binaryPush("1", "4", topic, "binary_echo", [8]));
  const b = await c.nextWhere((m, fr) => fr.bytes !== undefined, 6000, "the binary reply");
  assert.deepEqual(b.bytes, binaryReply("1", "4", topic, "ok", [8]));
});

test("[I11][f31][f19] V2 binary push with an empty join_ref reaches the channel; the reply carries the channel's join_ref",
  { phoenix: ["1.7"], why: "Phoenix 1.8 drops a push whose join_ref is stale (see the {1.8} case)", ...T() }, async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("1", topic, PRIVATE);
  c.sendBinary(binaryPush("", "2", topic, "binary_echo", [7]));
  const b = await c.nextWhere((m, fr) => fr.bytes !== undefined, 6000, "the binary reply");
  assert.deepEqual(b.bytes, binaryReply("1", "2", topic, "ok", [7]));
});

test("[I11][f14] a numeric ref beyond 64 bits is echoed exactly as written (V2 and V1)", T(), async (t) => {
  const big = "123456789012345678901234567890";
  const v2 = await openRaw(t);
  v2.sendText(`[null,${big},"phoenix","heartbeat",{}]`);
  assert.equal(await v2.text(), `[null,${big},"phoenix","phx_reply",{"response":{},"status":"ok"}]`);
  const topic = uniq("private:");
  v2.sendText(`["1",${big}1,"${topic}","phx_join",{"token":"letmein"}]`);
  assert.equal(await v2.text(), `["1",${big}1,"${topic}","phx_reply",{"response":{"topic":"${topic}"},"status":"ok"}]`);
  const v1 = await openRaw(t, "vsn=1.0.0");
  v1.sendText(`{"topic":"phoenix","event":"heartbeat","payload":{},"ref":-${big}}`);
  const text = await v1.text();
  assert.ok(text.includes(`"ref":-${big}`), `the ref comes back digit for digit: ${text}`);
});
