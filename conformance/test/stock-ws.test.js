// The stock phoenix.js clients over WebSocket, used as an application uses them
// (Socket, Channel, Push.receive, Presence). Every case runs once per client
// generation: the newest 1.8.x and the newest 1.7.x.
"use strict";
const test = require("../lib/case");
const { only18 } = test;
const assert = require("node:assert/strict");
const { openSocket, join, joinOutcome, push, nextEvent, collect, trackPresence } = require("../lib/stock");
const { uniq, until, sleep, plain, T } = require("../lib/util");
const { CLIENT_GENS, SERVER_GEN } = require("../lib/config");
const { versions } = require("../lib/env");

const is18 = SERVER_GEN === "1.8";

for (const gen of CLIENT_GENS) {
  const name = (title) => `[phoenix ${versions[gen]}]${title}`;

  test(name("[A2][J202] connect and join: ok with {topic}"), T(), async (t) => {
    const s = openSocket(t, gen);
    let opens = 0;
    s.onOpen(() => { opens += 1; });
    const topic = uniq("room:");
    const ch = s.channel(topic, { user: "a" });
    assert.deepEqual(await join(ch), { topic });
    assert.equal(ch.state, "joined");
    assert.equal(opens, 1);
  });

  test(name("[A27][contract] reject=1: the socket never opens and reports errors"), T(), async (t) => {
    const s = openSocket(t, gen, { params: { reject: "1" } });
    let opened = false, errors = 0;
    s.onOpen(() => { opened = true; });
    s.onError(() => { errors += 1; });
    await until(() => errors >= 2, 6000, "errors (the client keeps retrying)");
    assert.equal(opened, false);
  });

  test(name("[A31][f4] an unknown vsn option (3.0.0): the socket never opens"), T(), async (t) => {
    const s = openSocket(t, gen, { vsn: "3.0.0" });
    let opened = false, errors = 0;
    s.onOpen(() => { opened = true; });
    s.onError(() => { errors += 1; });
    await until(() => errors >= 1, 6000, "an error");
    assert.equal(opened, false);
  });

  test(name("[A32][J194][f45] heartbeats are answered: the socket stays up with a 250 ms interval"), T(), async (t) => {
    // The client closes the socket when a heartbeat is not answered within one interval.
    const s = openSocket(t, gen, { heartbeatIntervalMs: 250 });
    let opens = 0, closes = 0;
    const replies = [];
    s.onOpen(() => { opens += 1; });
    s.onClose(() => { closes += 1; });
    s.onMessage((m) => { if (m.topic === "phoenix") replies.push(m); });
    await until(() => replies.length >= 3, 4000, "three heartbeat replies");
    for (const m of replies) {
      assert.equal(m.event, "phx_reply");
      assert.deepEqual(plain(m.payload), { status: "ok", response: {} });
      assert.ok(!m.join_ref, "heartbeat replies carry join_ref null");
    }
    assert.equal(opens, 1);
    assert.equal(closes, 0);
  });

  test(name("[f17][f2] vsn 1.0.0 with a V1 encode/decode: join, echo and broadcasts work"), T(), async (t) => {
    const v1 = openSocket(t, gen, {
      vsn: "1.0.0",
      encode: (m, cb) => cb(JSON.stringify({ topic: m.topic, event: m.event, payload: m.payload, ref: m.ref })),
      decode: (raw, cb) => { const m = JSON.parse(raw); cb({ join_ref: null, ...m }); },
    });
    const topic = uniq("room:");
    const ch = v1.channel(topic, { user: "v1" });
    assert.deepEqual(await join(ch), { topic });
    assert.deepEqual(await push(ch, "echo", { via: "v1" }), { status: "ok", response: { via: "v1" } });
    const v2 = openSocket(t, gen).channel(topic, { user: "v2" });
    await join(v2);
    const got = nextEvent(ch, "shout");
    await push(v2, "shout", { from: "v2" });
    assert.deepEqual(await got, { from: "v2" });
  });

  test(name("[contract] echo: ok with the same payload"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    await join(ch);
    const body = { a: 1, b: [true, null, "é✓"], c: { d: { e: 2.5 } } };
    assert.deepEqual(await push(ch, "echo", body), { status: "ok", response: body });
  });

  test(name("[contract] echo_error: error with the same payload"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    await join(ch);
    assert.deepEqual(await push(ch, "echo_error", { e: 1 }), { status: "error", response: { e: 1 } });
  });

  test(name("[contract] an unknown event: error {reason: unhandled event}"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    await join(ch);
    assert.deepEqual(await push(ch, "nope", {}), { status: "error", response: { reason: "unhandled event" } });
  });

  test(name("[J50][contract] noreply: the push times out (200 ms), the channel keeps working"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    await join(ch);
    const started = Date.now();
    assert.deepEqual(await push(ch, "noreply", {}, 200), { status: "timeout" });
    assert.ok(Date.now() - started >= 150);
    assert.deepEqual(await push(ch, "echo", { after: 1 }), { status: "ok", response: { after: 1 } });
  });

  test(name("[J202][contract] a private join with a wrong token: error {reason: unauthorized}"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("private:"), { token: "wrong" });
    assert.deepEqual(plain(await joinOutcome(ch)), { status: "error", response: { reason: "unauthorized" } });
    ch.leave();
  });

  test(name("[contract] a private join with the token: ok, and the room events work"), T(), async (t) => {
    const topic = uniq("private:");
    const ch = openSocket(t, gen).channel(topic, { token: "letmein" });
    assert.deepEqual(await join(ch), { topic });
    assert.deepEqual(await push(ch, "echo", { p: 1 }), { status: "ok", response: { p: 1 } });
  });

  test(name("[A34] a join on an unmatched topic: error {reason: unmatched topic}"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("nowhere:"), {});
    assert.deepEqual(plain(await joinOutcome(ch)), { status: "error", response: { reason: "unmatched topic" } });
    ch.leave();
  });

  test(name("[J201][J202] pushes made before the join reply are sent after it and answered"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    const joined = join(ch);
    const early = push(ch, "echo", { early: true });
    await joined;
    assert.deepEqual(await early, { status: "ok", response: { early: true } });
  });

  test(name("[A3] shout: every member gets it, the sender too; the reply is ok {}"), T(), async (t) => {
    const topic = uniq("room:");
    const a = openSocket(t, gen).channel(topic, {}), b = openSocket(t, gen).channel(topic, {});
    await join(a); await join(b);
    const atA = nextEvent(a, "shout"), atB = nextEvent(b, "shout");
    assert.deepEqual(await push(a, "shout", { hi: 1 }), { status: "ok", response: {} });
    assert.deepEqual(await atA, { hi: 1 });
    assert.deepEqual(await atB, { hi: 1 });
  });

  test(name("[G127] shout_others: the others get it, the sender does not"), T(), async (t) => {
    const topic = uniq("room:");
    const a = openSocket(t, gen).channel(topic, {}), b = openSocket(t, gen).channel(topic, {});
    await join(a); await join(b);
    const atA = collect(a, "shout");
    const atB = nextEvent(b, "shout");
    assert.deepEqual(await push(a, "shout_others", { hi: 2 }), { status: "ok", response: {} });
    assert.deepEqual(await atB, { hi: 2 });
    await sleep(300);
    assert.deepEqual(atA, []);
  });

  test(name("[J198] frames are routed by topic: a shout in one room is not seen in another on the same socket"), T(), async (t) => {
    const s = openSocket(t, gen);
    const one = s.channel(uniq("room:"), {}), two = s.channel(uniq("room:"), {});
    await join(one); await join(two);
    const atTwo = collect(two, "shout");
    const atOne = nextEvent(one, "shout");
    await push(one, "shout", { only: "one" });
    assert.deepEqual(await atOne, { only: "one" });
    await sleep(200);
    assert.deepEqual(atTwo, []);
  });

  test(name("[G129][contract] push_me: the server pushes the event; {} without payload"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    await join(ch);
    const got = nextEvent(ch, "ping");
    ch.push("push_me", { event: "ping", payload: { p: 1 } });
    assert.deepEqual(await got, { p: 1 });
    const empty = nextEvent(ch, "empty");
    ch.push("push_me", { event: "empty" });
    assert.deepEqual(await empty, {});
  });

  test(name("[contract] room:admin broadcast reaches a member of another topic"), T(), async (t) => {
    const topic = uniq("room:");
    const member = openSocket(t, gen).channel(topic, {});
    const admin = openSocket(t, gen).channel("room:admin", { user: uniq("admin-") });
    await join(member); await join(admin);
    const got = nextEvent(member, "news");
    assert.deepEqual(await push(admin, "broadcast", { topic, event: "news", payload: { v: 3 } }), { status: "ok", response: {} });
    assert.deepEqual(await got, { v: 3 });
  });

  test(name("[A22][J204] crash: onError, automatic rejoin with a fresh presence_state; the other channel untouched"), T(), async (t) => {
    const s = openSocket(t, gen);
    const topic = uniq("room:");
    const ch = s.channel(topic, { user: "crasher" });
    const other = s.channel(uniq("private:"), { token: "letmein" });
    const p = trackPresence(gen, ch);
    const states = collect(ch, "presence_state");
    let joins = 0;
    const errors = [];
    let otherErrors = 0;
    ch.join().receive("ok", () => { joins += 1; });
    await join(other);
    other.onError(() => { otherErrors += 1; });
    await until(() => joins === 1 && p.keys().includes("crasher"), 6000, "first join and presence");
    const firstJoinRef = ch.joinRef();
    ch.onError((reason) => errors.push(plain(reason)));
    ch.push("crash", {});
    await until(() => errors.length >= 1 && joins >= 2, 5000, "phx_error then a rejoin");
    assert.deepEqual(errors[0], is18 ? { reason: "channel_crash" } : {});
    assert.notEqual(ch.joinRef(), firstJoinRef, "a rejoin uses a new join_ref");
    await until(() => states.length >= 2, 6000, "a fresh presence_state after the rejoin");
    await until(() => p.keys().includes("crasher") && p.view().crasher.length === 1, 6000, "tracked again, once");
    assert.deepEqual(await push(ch, "echo", { again: true }), { status: "ok", response: { again: true } });
    assert.deepEqual(await push(other, "echo", { fine: true }), { status: "ok", response: { fine: true } });
    assert.equal(otherErrors, 0);
  });

  test(name("[J203][A38] stop: onClose, state closed, no rejoin"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    let joins = 0, closed = 0, errored = 0;
    ch.join().receive("ok", () => { joins += 1; });
    ch.onClose(() => { closed += 1; });
    ch.onError(() => { errored += 1; });
    await until(() => joins === 1, 6000, "join");
    ch.push("stop", {});
    await until(() => closed === 1, 6000, "onClose");
    await sleep(400);
    assert.equal(joins, 1);
    assert.equal(errored, 0);
    assert.equal(ch.state, "closed");
  });

  test(name("[J205][A5] leave(): reply ok, onClose, and the others see the presence leave"), T(), async (t) => {
    const topic = uniq("room:");
    const watcher = openSocket(t, gen).channel(topic, { user: "watcher" });
    const p = trackPresence(gen, watcher);
    await join(watcher);
    const ch = openSocket(t, gen).channel(topic, { user: "leaver" });
    await join(ch);
    await until(() => p.keys().includes("leaver"), 6000, "leaver listed");
    let closed = false;
    ch.onClose(() => { closed = true; });
    const outcome = await new Promise((resolve) => ch.leave().receive("ok", () => resolve("ok")).receive("timeout", () => resolve("timeout")));
    assert.equal(outcome, "ok");
    await until(() => closed, 2000, "onClose");
    await until(() => !p.keys().includes("leaver"), 6000, "leaver gone from presence");
    assert.ok(p.log.leaves.some((l) => l.key === "leaver"));
  });

  // 1.8 closes with 1001 and both clients reconnect. 1.7 closes with 1000: the 1.8
  // client still reconnects (only its own disconnect() is final), the 1.7 client does not.
  const disconnectOpts = gen === "1.8" ? T(10000)
    : only18("Phoenix 1.7 closes with 1000, after which the 1.7 client does not reconnect", T(10000));
  test(name("[A29][E103] disconnect_user: the socket closes (1.8: 1001, 1.7: 1000), reconnects and rejoins"), disconnectOpts, async (t) => {
    const user = uniq("u");
    const s = openSocket(t, gen, { params: { user_id: user } });
    const codes = [];
    let opens = 0;
    s.onOpen(() => { opens += 1; });
    s.onClose((e) => codes.push(e && e.code));
    const ch = s.channel(uniq("room:"), { user });
    let joins = 0;
    ch.join().receive("ok", () => { joins += 1; });
    await until(() => opens === 1 && joins === 1, 6000, "open and joined");
    const admin = openSocket(t, gen).channel("room:admin", { user: uniq("admin-") });
    await join(admin);
    assert.deepEqual(await push(admin, "disconnect_user", { user_id: user }), { status: "ok", response: {} });
    await until(() => codes.length >= 1, 6000, "the close");
    assert.equal(codes[0], is18 ? 1001 : 1000);
    await until(() => opens >= 2 && joins >= 2, 5000, "reconnect and rejoin");
    assert.deepEqual(await push(ch, "echo", { back: true }), { status: "ok", response: { back: true } });
  });

  test(name("[J210][J211][H138][H139] Presence: onJoin, onLeave, onSync and list across two clients"), T(), async (t) => {
    const topic = uniq("room:");
    const a = openSocket(t, gen).channel(topic, { user: "alice", meta: { m: 1 } });
    const p = trackPresence(gen, a);
    await join(a);
    await until(() => p.keys().includes("alice"), 6000, "alice listed");
    assert.ok(p.log.syncs >= 1);
    const bSock = openSocket(t, gen);
    const b = bSock.channel(topic, { user: "bob" });
    await join(b);
    await until(() => p.keys().join() === "alice,bob", 6000, "bob listed");
    const bobJoin = p.log.joins.find((j) => j.key === "bob");
    assert.equal(bobJoin.current, undefined, "bob is a new key");
    assert.equal(bobJoin.joined.metas.length, 1);
    assert.equal(p.view().alice[0].m, 1);
    b.leave();
    await until(() => p.log.leaves.some((l) => l.key === "bob"), 6000, "bob's leave");
    assert.deepEqual(p.keys(), ["alice"]);
  });

  test(name("[H136][J211] Presence multi-device: one key with two metas; one device leaving keeps the key"), T(), async (t) => {
    const topic = uniq("room:");
    const watcher = openSocket(t, gen).channel(topic, { user: "w" });
    const p = trackPresence(gen, watcher);
    await join(watcher);
    const phone = openSocket(t, gen);
    await join(phone.channel(topic, { user: "carol", meta: { device: "phone" } }));
    const laptop = openSocket(t, gen);
    await join(laptop.channel(topic, { user: "carol", meta: { device: "laptop" } }));
    await until(() => (p.view().carol || []).length === 2, 6000, "two metas under carol");
    assert.deepEqual(p.view().carol.map((m) => m.device).sort(), ["laptop", "phone"]);
    laptop.disconnect();
    await until(() => (p.view().carol || []).length === 1, 6000, "one meta left");
    assert.equal(p.view().carol[0].device, "phone");
  });

  test(name("[J215][H145] Presence update_meta: onJoin with the previous presence, the meta replaced in place"), T(), async (t) => {
    const topic = uniq("room:");
    const ch = openSocket(t, gen).channel(topic, { user: "dan", meta: { status: "online" } });
    const p = trackPresence(gen, ch);
    await join(ch);
    await until(() => p.keys().includes("dan"), 6000, "dan listed");
    const oldRef = p.view().dan[0].phx_ref;
    const joinsBefore = p.log.joins.length;
    assert.deepEqual(await push(ch, "update_meta", { status: "away" }), { status: "ok", response: {} });
    await until(() => p.view().dan && p.view().dan[0].status === "away", 6000, "the new meta");
    assert.equal(p.view().dan.length, 1);
    const upd = p.log.joins.slice(joinsBefore).find((j) => j.key === "dan");
    assert.ok(upd && upd.current, "onJoin got dan's previous presence");
    assert.equal(upd.joined.metas[0].phx_ref_prev, oldRef);
    assert.ok(p.log.leaves.some((l) => l.key === "dan" && l.left.metas[0].phx_ref === oldRef), "the old meta left");
    assert.equal(p.keys().includes("dan"), true, "the key never disappeared");
  });

  test(name("[H139][f40] Presence: a socket that disconnects leaves"), T(), async (t) => {
    const topic = uniq("room:");
    const a = openSocket(t, gen).channel(topic, { user: "stay" });
    const p = trackPresence(gen, a);
    await join(a);
    const other = openSocket(t, gen);
    await join(other.channel(topic, { user: "go" }));
    await until(() => p.keys().includes("go"), 6000, "go listed");
    other.disconnect();
    await until(() => !p.keys().includes("go"), 6000, "go gone");
    assert.ok(p.log.leaves.some((l) => l.key === "go"));
  });

  test(name("[J213][late joiner] Presence of a late joiner lists everyone after its first sync"), T(), async (t) => {
    const topic = uniq("room:");
    for (const u of ["u1", "u2", "u3"]) await join(openSocket(t, gen).channel(topic, { user: u }));
    const late = openSocket(t, gen).channel(topic, { user: "late" });
    const p = trackPresence(gen, late);
    await join(late);
    await until(() => p.log.syncs >= 1 && p.keys().length === 4, 6000, "four members");
    assert.deepEqual(p.keys(), ["late", "u1", "u2", "u3"]);
  });

  test(name("[A39][J209] binary_echo: an ArrayBuffer payload comes back as an ArrayBuffer"), T(), async (t) => {
    const ch = openSocket(t, gen).channel(uniq("room:"), {});
    await join(ch);
    const bytes = [9, 8, 7, 0, 255];
    const reply = await push(ch, "binary_echo", new Uint8Array(bytes).buffer);
    assert.equal(reply.status, "ok");
    assert.ok(reply.response instanceof ArrayBuffer, "the reply payload is an ArrayBuffer");
    assert.deepEqual([...new Uint8Array(reply.response)], bytes);
  });
}

test("[phoenix 1.8][J208][f21] binary on a non-ASCII topic: sizes are UTF-8 bytes", T(), async (t) => {
  const ch = openSocket(t, "1.8").channel(uniq("room:ü✓-"), {});
  await join(ch);
  const reply = await push(ch, "binary_echo", new Uint8Array([1, 2, 3]).buffer);
  assert.equal(reply.status, "ok");
  assert.deepEqual([...new Uint8Array(reply.response)], [1, 2, 3]);
});
