// Small exactness checks on the socket multiplexer, raw frames, both serializers
// where they apply: the heartbeat ignores a join_ref it is given, the "phoenix"
// topic cannot be joined, and a binary push of an event the room does not handle is
// answered like any unhandled event.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { openRaw, binaryPush } = require("../lib/raw");
const { uniq, T } = require("../lib/util");

for (const vsn of ["1.0.0", "2.0.0"]) {
  const tag = vsn === "1.0.0" ? "v1" : "v2";
  const wire = (c, m) => c.wire(m);

  test(`[A32][f26] ${tag} a heartbeat that carries a join_ref is answered with join_ref null`, T(), async (t) => {
    const c = await openRaw(t, `vsn=${vsn}`);
    if (vsn === "1.0.0") c.sendText(JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1", join_ref: "5" }));
    else c.sendText('["5","1","phoenix","heartbeat",{}]');
    assert.deepEqual(await c.json(), wire(c, { join_ref: null, ref: "1", topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} } }));
  });

  test(`[A34][f27] ${tag} the "phoenix" topic cannot be joined: unmatched topic, join_ref null`, T(), async (t) => {
    const c = await openRaw(t, `vsn=${vsn}`);
    c.send("6", "6", "phoenix", "phx_join", {});
    assert.deepEqual(await c.json(), wire(c, { join_ref: null, ref: "6", topic: "phoenix", event: "phx_reply", payload: { status: "error", response: { reason: "unmatched topic" } } }));
  });
}

test("[f19][contract] a binary push of an event the room does not handle: text error {reason: unhandled event}", T(), async (t) => {
  const c = await openRaw(t);
  const topic = uniq("private:");
  await c.joinOk("2", topic, { token: "letmein" });
  c.sendBinary(binaryPush("2", "3", topic, "whatever", Buffer.from([1, 2])));
  const f = await c.nextWhere((m) => m.ref === "3", 6000, "the reply to the binary push");
  assert.ok(f.json, "the error reply is a text frame (its payload is a map)");
  assert.deepEqual(f.json, ["2", "3", topic, "phx_reply", { status: "error", response: { reason: "unhandled event" } }]);
});
