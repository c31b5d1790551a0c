// Fan-out: many clients in one room all receive every broadcast, in order.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { Raw } = require("../lib/raw");
const { openSocket, join } = require("../lib/stock");
const { uniq, until, T } = require("../lib/util");

const CLIENTS = 200;
const SHOUTS = 20;

test(`[A3][f37] fan-out: ${CLIENTS} raw clients (v1 and v2) all receive ${SHOUTS} shouts, in order`, T(40000), async (t) => {
  // A private topic: no presence, so 200 joins do not add 200 x 200 presence_diff
  // frames that would slow every other case running at the same time.
  const topic = uniq("private:");
  const subs = [];
  t.after(() => subs.forEach((s) => s.close()));
  for (let i = 0; i < CLIENTS; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, CLIENTS - i) }, (_, k) => Raw.open((i + k) % 4 === 0 ? "vsn=1.0.0" : "vsn=2.0.0")));
    subs.push(...batch);
  }
  await Promise.all(subs.map((s) => s.joinOk("1", topic, { token: "letmein" }, 15000)));
  const sender = await Raw.open();
  subs.push(sender);
  await sender.joinOk("1", topic, { token: "letmein" });
  for (let n = 0; n < SHOUTS; n++) sender.send("1", String(n + 2), topic, "shout", { n });
  const shoutsOf = (c) => c.frames.filter((f) => f.msg && f.msg.event === "shout").map((f) => f.msg.payload.n);
  const want = Array.from({ length: SHOUTS }, (_, n) => n);
  await Promise.all(subs.map((c, i) => c.waitFor(() => shoutsOf(c).length >= SHOUTS, 25000, `client ${i}: ${SHOUTS} shouts`)));
  subs.forEach((c, i) => assert.deepEqual(shoutsOf(c), want, `client ${i} got the shouts in order`));
});

test(`[A3] fan-out through the stock client: 30 sockets of each generation get 10 shouts in order`, T(30000), async (t) => {
  const topic = uniq("room:");
  const chans = [];
  for (const gen of ["1.8", "1.7"]) {
    for (let i = 0; i < 30; i++) chans.push(openSocket(t, gen).channel(topic, { user: `${gen}-${i}` }));
  }
  await Promise.all(chans.map((c) => join(c, 10000)));
  const got = chans.map(() => []);
  chans.forEach((c, i) => c.on("shout", (p) => got[i].push(p.n)));
  for (let n = 0; n < 10; n++) chans[0].push("shout", { n });
  await until(() => got.every((g) => g.length >= 10), 15000, "every socket got 10 shouts");
  const want = Array.from({ length: 10 }, (_, n) => n);
  got.forEach((g, i) => assert.deepEqual(g, want, `socket ${i}`));
});
