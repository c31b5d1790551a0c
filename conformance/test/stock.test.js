// Cases through the stock phoenix.js client's public API, as an application
// uses it, with both client generations (1.8.x and 1.7.x).
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { uniq, stock, joined, push, until, clients } = require("../lib/harness");

const T = { timeout: 10000 };

for (const gen of ["1.8", "1.7"]) {
  const cleanup = [];
  const sock = (params, opts) => { const s = stock(gen, params, opts); cleanup.push(s); return s; };
  test.afterEach(() => { for (const s of cleanup.splice(0)) s.disconnect(); });

  test(`[${gen}][A2] connect and join; the reply carries {topic}`, T, async () => {
    const topic = uniq("room:");
    const reply = await joined(sock().channel(topic, { user: "a" }));
    assert.deepEqual(reply, { topic });
  });

  test(`[${gen}][A27] a refused connection never opens`, T, async () => {
    let opened = false, errors = 0;
    const s = sock({ reject: "1" });
    s.onOpen(() => { opened = true; });
    s.onError(() => { errors += 1; });
    await until(() => errors >= 1, 3000, "an error");
    assert.equal(opened, false);
  });

  test(`[${gen}] push echo gets ok with the payload`, T, async () => {
    const ch = sock().channel(uniq("room:"), {});
    await joined(ch);
    assert.deepEqual(await push(ch, "echo", { a: 1, b: [true] }), { status: "ok", response: { a: 1, b: [true] } });
  });

  test(`[${gen}] echo_error is received as error`, T, async () => {
    const ch = sock().channel(uniq("room:"), {});
    await joined(ch);
    assert.deepEqual(await push(ch, "echo_error", { e: 1 }), { status: "error", response: { e: 1 } });
  });

  test(`[${gen}] noreply makes the push time out`, T, async () => {
    const ch = sock().channel(uniq("room:"), {});
    await joined(ch);
    assert.equal((await push(ch, "noreply", {}, 300)).status, "timeout");
  });

  test(`[${gen}][A3] broadcasts reach other clients`, T, async () => {
    const topic = uniq("room:");
    const a = sock().channel(topic, {}), b = sock().channel(topic, {});
    await joined(a); await joined(b);
    const got = new Promise((resolve) => b.on("shout", resolve));
    await push(a, "shout", { hi: 1 });
    assert.deepEqual(await got, { hi: 1 });
  });

  test(`[${gen}] server push (push_me) is delivered`, T, async () => {
    const ch = sock().channel(uniq("room:"), {});
    await joined(ch);
    const got = new Promise((resolve) => ch.on("ping", resolve));
    ch.push("push_me", { event: "ping", payload: { p: 1 } });
    assert.deepEqual(await got, { p: 1 });
  });

  test(`[${gen}][A22][J204] crash: onError, then the client rejoins by itself`, T, async () => {
    const ch = sock().channel(uniq("room:"), { user: "x" });
    let joins = 0, errors = 0;
    ch.join().receive("ok", () => { joins += 1; });
    await until(() => joins === 1, 3000, "first join");
    ch.onError(() => { errors += 1; });
    ch.push("crash", {});
    await until(() => errors >= 1 && joins >= 2, 5000, "error and rejoin");
    assert.equal((await push(ch, "echo", { again: true })).response.again, true);
  });

  test(`[${gen}][J203] stop: onClose and no rejoin`, T, async () => {
    const ch = sock().channel(uniq("room:"), {});
    let joins = 0, closed = false;
    ch.join().receive("ok", () => { joins += 1; });
    ch.onClose(() => { closed = true; });
    await until(() => joins === 1, 3000, "join");
    ch.push("stop", {});
    await until(() => closed, 3000, "close");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(joins, 1);
    assert.equal(ch.state, "closed");
  });

  test(`[${gen}][J202] a refused private join is an error with the reason`, T, async () => {
    const ch = sock().channel(uniq("private:"), { token: "wrong" });
    const reason = await new Promise((resolve) => ch.join().receive("error", resolve));
    assert.deepEqual(reason, { reason: "unauthorized" });
    ch.leave();
  });

  test(`[${gen}][J210-215] Presence: onSync, onJoin, onLeave and list`, T, async () => {
    const { Presence } = clients[gen];
    const topic = uniq("room:");
    const a = sock().channel(topic, { user: "alice" });
    const presence = new Presence(a);
    const joinedKeys = [], leftKeys = [];
    presence.onJoin((key, current) => { if (!current) joinedKeys.push(key); });
    presence.onLeave((key, current) => { if (current.metas.length === 0) leftKeys.push(key); });
    await joined(a);
    await until(() => presence.list((k) => k).includes("alice"), 3000, "self listed");
    const bSock = sock();
    const b = bSock.channel(topic, { user: "bob" });
    await joined(b);
    await until(() => presence.list((k) => k).sort().join() === "alice,bob", 3000, "bob listed");
    b.leave();
    await until(() => leftKeys.includes("bob"), 3000, "bob left");
    assert.deepEqual(presence.list((k) => k), ["alice"]);
    assert.ok(joinedKeys.includes("bob"));
  });

  test(`[${gen}][A29] disconnect_user: the stock socket reconnects`, T, async () => {
    const user = uniq("u");
    const s = sock({ user_id: user });
    let opens = 0;
    s.onOpen(() => { opens += 1; });
    await until(() => opens === 1, 3000, "open");
    const admin = sock().channel("room:admin", {});
    await joined(admin);
    await push(admin, "disconnect_user", { user_id: user });
    await until(() => opens >= 2, 5000, "reconnect after 1001");
  });
}

test("[1.8][A39] binary payloads: ArrayBuffer in, ArrayBuffer reply out", T, async () => {
  const s = stock("1.8");
  try {
    const ch = s.channel(uniq("room:"), {});
    await joined(ch);
    const buf = new Uint8Array([9, 8, 7]).buffer;
    const reply = await push(ch, "binary_echo", buf);
    assert.equal(reply.status, "ok");
    assert.ok(reply.response instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(reply.response)], [9, 8, 7]);
  } finally { s.disconnect(); }
});
