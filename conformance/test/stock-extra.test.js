// More stock-client behaviours that depend on the server: what phoenix.js does on its
// own (leave a second instance of a topic, retry a refused join, batch long-poll
// sends) and what the server must then get right. Every case runs once per client
// generation.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const { openSocket, join, joinOutcome, push, trackPresence } = require("../lib/stock");
const { request, LP } = require("../lib/lp");
const { openRaw } = require("../lib/raw");
const { uniq, until, sleep, plain, T } = require("../lib/util");
const { CLIENT_GENS, LP_WINDOW_MS } = require("../lib/config");
const { versions } = require("../lib/env");

let lpAvailable = null;
async function needLongPoll(t) {
  if (lpAvailable === null) lpAvailable = (await request("GET", LP + "?vsn=2.0.0")).code !== 404;
  if (!lpAvailable) t.skip("the server does not serve long-poll at <mount>/longpoll (HTTP 404)");
  return lpAvailable;
}

for (const gen of CLIENT_GENS) {
  const name = (title) => `[phoenix ${versions[gen]}]${title}`;

  test(name("[J206][f29] a second Channel of the same topic: the client leaves the first, the second works, the first ends closed"), T(), async (t) => {
    const s = openSocket(t, gen);
    const topic = uniq("room:");
    const first = s.channel(topic, { user: "first" });
    await join(first);
    let firstClosed = false;
    first.onClose(() => { firstClosed = true; });
    const second = s.channel(topic, { user: "second" });
    const p = trackPresence(gen, second);
    assert.deepEqual(await join(second), { topic });
    assert.deepEqual(await push(second, "echo", { via: "second" }), { status: "ok", response: { via: "second" } });
    await until(() => firstClosed, 6000, "the first instance closed");
    assert.equal(first.state, "closed");
    assert.equal(second.state, "joined");
    await until(() => p.log.syncs >= 1 && p.keys().includes("second"), 6000, "the second instance tracked");
    // What the server tracks, seen by a fresh member: the second instance only. (The
    // second Channel's own view is not asserted: a leave diff of the first instance
    // can reach the stock client while it is still merging, and Phoenix does not fix
    // that order.)
    const observer = await openRaw(t);
    await observer.joinOk("1", topic, { user: "observer" });
    await observer.presenceWhere(topic, (st) => st.observer && st.second && !st.first, 6000, "observer and second, without first");
  });

  test(name("[J202][contract] a refused private join is retried by the client and refused every time"), T(), async (t) => {
    const s = openSocket(t, gen);
    const topic = uniq("private:");
    const refusals = [];
    s.onMessage((m) => {
      if (m.topic === topic && m.event === "phx_reply") refusals.push(plain(m.payload));
    });
    const ch = s.channel(topic, { token: "nope" });
    assert.deepEqual(plain(await joinOutcome(ch)), { status: "error", response: { reason: "unauthorized" } });
    await until(() => refusals.length >= 3, 6000, "two automatic retries (rejoin every 100 ms)");
    for (const r of refusals) assert.deepEqual(r, { status: "error", response: { reason: "unauthorized" } });
    assert.notEqual(ch.state, "joined");
    ch.leave();
  });

  // 1.7's Presence keeps its state in a plain {}, where "__proto__" cannot be a key;
  // 1.8 uses null-prototype objects (J212), so this case runs with 1.8 only.
  if (gen === "1.8") test(name("[J212][f67] presence keys __proto__ and constructor are ordinary keys"), T(), async (t) => {
    const topic = uniq("room:");
    const watcher = openSocket(t, gen).channel(topic, { user: "watcher" });
    const p = trackPresence(gen, watcher);
    await join(watcher);
    await join(openSocket(t, gen).channel(topic, { user: "__proto__", meta: { odd: 1 } }));
    await join(openSocket(t, gen).channel(topic, { user: "constructor", meta: { odd: 2 } }));
    // Read through Presence.list: a plain {} (as in trackPresence's view) cannot hold "__proto__".
    const listed = () => p.presence.list((key, pres) => [key, pres.metas.length, pres.metas[0].odd]);
    await until(() => listed().length === 3, 6000, "three keys");
    assert.deepEqual(listed().map(([k]) => k).sort(), ["__proto__", "constructor", "watcher"]);
    assert.deepEqual(listed().filter(([k]) => k !== "watcher").sort(), [["__proto__", 1, 1], ["constructor", 1, 2]]);
  });

  test(name("[J218][J219][C71][f58] LongPoll: 150 pushes in one tick (POSTs of 100 + 50 lines) are all answered, in order"), T(LP_WINDOW_MS + 10000), async (t) => {
    if (!(await needLongPoll(t))) return;
    const ch = openSocket(t, gen, { transport: "longpoll" }).channel(uniq("private:"), { token: "letmein" });
    await join(ch);
    const order = [];
    const replies = Array.from({ length: 150 }, (_, i) => new Promise((resolve) => {
      ch.push("echo", { i }, 5000)
        .receive("ok", (r) => { order.push(r.i); resolve("ok"); })
        .receive("error", () => resolve("error"))
        .receive("timeout", () => resolve("timeout"));
    }));
    const outcomes = await Promise.all(replies);
    assert.deepEqual(outcomes.filter((o) => o !== "ok"), [], "every push answered ok");
    assert.deepEqual(order, Array.from({ length: 150 }, (_, i) => i), "replies in the order sent");
  });

  test(name("[J203][f34] after stop the same topic can be joined again on the same socket"), T(), async (t) => {
    const s = openSocket(t, gen);
    const topic = uniq("private:");
    const ch = s.channel(topic, { token: "letmein" });
    await join(ch);
    let closed = false;
    ch.onClose(() => { closed = true; });
    ch.push("stop", {});
    await until(() => closed, 6000, "onClose");
    await sleep(50);
    const again = s.channel(topic, { token: "letmein" });
    assert.deepEqual(await join(again), { topic });
    assert.deepEqual(await push(again, "echo", { n: 2 }), { status: "ok", response: { n: 2 } });
  });
}
