// The stock clients' LongPoll transport (1.8: fetch; 1.7: XMLHttpRequest, given by
// lib/xhr.js) and their automatic fallback from a WebSocket that cannot connect.
// Every case runs once per client generation. Skipped when the server does not serve
// <mount>/longpoll.
"use strict";
const test = require("../lib/case");
const assert = require("node:assert/strict");
const WebSocket = require("ws");
const { clients, openSocket, join, push, nextEvent, collect, trackPresence, FAST } = require("../lib/stock");
const { request, LP } = require("../lib/lp");
const { uniq, until, sleep, plain, T } = require("../lib/util");
const { CLIENT_GENS, SERVER_GEN, LP_WINDOW_MS, HTTP_MOUNT } = require("../lib/config");
const { versions } = require("../lib/env");

const is18 = SERVER_GEN === "1.8";
const TL = T(LP_WINDOW_MS + 8000);

let available = null;
async function needLongPoll(t) {
  if (available === null) available = (await request("GET", LP + "?vsn=2.0.0")).code !== 404;
  if (!available) t.skip("the server does not serve long-poll at <mount>/longpoll (HTTP 404)");
  return available;
}

const lp = (t, gen, opts = {}) => openSocket(t, gen, { transport: "longpoll", ...opts });

for (const gen of CLIENT_GENS) {
  const name = (title) => `[phoenix ${versions[gen]}][LongPoll]${title}`;

  test(name("[J199][C53] join, echo, echo_error and push_me"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const topic = uniq("room:");
    const ch = lp(t, gen).channel(topic, { user: "lp" });
    assert.deepEqual(await join(ch), { topic });
    assert.deepEqual(await push(ch, "echo", { over: "longpoll", n: [1, 2] }), { status: "ok", response: { over: "longpoll", n: [1, 2] } });
    assert.deepEqual(await push(ch, "echo_error", { e: 1 }), { status: "error", response: { e: 1 } });
    const got = nextEvent(ch, "lp_push");
    ch.push("push_me", { event: "lp_push", payload: { p: 1 } });
    assert.deepEqual(await got, { p: 1 });
  });

  test(name("[J50] noreply: the push times out (200 ms)"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const ch = lp(t, gen).channel(uniq("room:"), {});
    await join(ch);
    assert.deepEqual(await push(ch, "noreply", {}, 200), { status: "timeout" });
    assert.deepEqual(await push(ch, "echo", { still: 1 }), { status: "ok", response: { still: 1 } });
  });

  test(name("[A3][G127] shout and shout_others between a long-poll and a WebSocket client"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const topic = uniq("room:");
    const a = lp(t, gen).channel(topic, {});
    const b = openSocket(t, gen).channel(topic, {});
    await join(a); await join(b);
    const atA = nextEvent(a, "shout"), atB = nextEvent(b, "shout");
    assert.deepEqual(await push(b, "shout", { from: "ws" }), { status: "ok", response: {} });
    assert.deepEqual(await atA, { from: "ws" });
    assert.deepEqual(await atB, { from: "ws" });
    const onlyB = nextEvent(b, "shout");
    const seenByA = collect(a, "shout");
    assert.deepEqual(await push(a, "shout_others", { from: "lp" }), { status: "ok", response: {} });
    assert.deepEqual(await onlyB, { from: "lp" });
    await sleep(300);
    assert.deepEqual(seenByA, []);
  });

  test(name("[J210][H138][H139] Presence over long-poll: join and leave of another client"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const topic = uniq("room:");
    const a = lp(t, gen).channel(topic, { user: "lp-a" });
    const p = trackPresence(gen, a);
    await join(a);
    await until(() => p.keys().includes("lp-a"), 8000, "lp-a listed");
    const b = lp(t, gen).channel(topic, { user: "lp-b", meta: { via: "lp" } });
    await join(b);
    await until(() => p.keys().join() === "lp-a,lp-b", 8000, "both listed");
    assert.equal(p.view()["lp-b"][0].via, "lp");
    assert.ok(Number.isInteger(p.view()["lp-b"][0].online_at));
    b.leave();
    await until(() => p.keys().join() === "lp-a", 8000, "lp-b gone");
  });

  test(name("[A22][C75][J204] crash: onError, automatic rejoin, fresh presence_state"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const ch = lp(t, gen).channel(uniq("room:"), { user: "lp-crash" });
    const states = collect(ch, "presence_state");
    let joins = 0;
    const errors = [];
    ch.join().receive("ok", () => { joins += 1; });
    await until(() => joins === 1 && states.length === 1, 8000, "join and presence_state");
    ch.onError((r) => errors.push(plain(r)));
    ch.push("crash", {});
    await until(() => errors.length >= 1 && joins >= 2, 6000, "phx_error then a rejoin");
    assert.deepEqual(errors[0], is18 ? { reason: "channel_crash" } : {});
    await until(() => states.length >= 2, 8000, "a fresh presence_state");
    assert.deepEqual(await push(ch, "echo", { after: "rejoin" }), { status: "ok", response: { after: "rejoin" } });
  });

  test(name("[J203][A38] stop: onClose and no rejoin"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const ch = lp(t, gen).channel(uniq("room:"), {});
    let joins = 0, closed = false;
    ch.join().receive("ok", () => { joins += 1; });
    ch.onClose(() => { closed = true; });
    await until(() => joins === 1, 8000, "join");
    ch.push("stop", {});
    await until(() => closed, 8000, "onClose");
    await sleep(300);
    assert.equal(joins, 1);
    assert.equal(ch.state, "closed");
  });

  test(name("[C72][f61] reject=1: {status: 403}, the socket never opens and reports an error"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const s = lp(t, gen, { params: { reject: "1" } });
    let opened = false, errors = 0;
    s.onOpen(() => { opened = true; });
    s.onError(() => { errors += 1; });
    await until(() => errors >= 1, 8000, "an error");
    assert.equal(opened, false);
  });

  test(name("[A29][C78][f57] disconnect_user: the session ends; 1.8 reconnects and rejoins, 1.7 re-opens without its channels"), T(LP_WINDOW_MS * 2 + 8000), async (t) => {
    if (!(await needLongPoll(t))) return;
    const user = uniq("u");
    const s = lp(t, gen, { params: { user_id: user } });
    let opens = 0;
    s.onOpen(() => { opens += 1; });
    const ch = s.channel(uniq("room:"), { user });
    let joins = 0;
    ch.join().receive("ok", () => { joins += 1; });
    await until(() => opens === 1 && joins === 1, 8000, "open and joined");
    const admin = openSocket(t, gen).channel("room:admin", { user: uniq("admin-") });
    await join(admin);
    assert.deepEqual(await push(admin, "disconnect_user", { user_id: user }), { status: "ok", response: {} });
    if (gen === "1.7") {
      // 1.7 takes the 410 of a gone session for a fresh open (f57): it re-opens, but
      // its channels still think they are joined, and the new session has none.
      await until(() => opens >= 2, LP_WINDOW_MS + 5000, "the 1.7 client re-opening");
      assert.equal(joins, 1, "1.7 does not rejoin after a 410");
      assert.deepEqual(await push(ch, "echo", {}), { status: "error", response: { reason: "unmatched topic" } });
      return;
    }
    await until(() => opens >= 2 && joins >= 2, LP_WINDOW_MS + 5000, "a new session and a rejoin");
    assert.deepEqual(await push(ch, "echo", { back: true }), { status: "ok", response: { back: true } });
  });

  test(name("[f51] fallback: a WebSocket that cannot connect falls back to LongPoll"), TL, async (t) => {
    if (!(await needLongPoll(t))) return;
    const { Socket, LongPoll } = clients[gen];
    // A WebSocket that always dials a closed local port, as behind a proxy that breaks WebSockets.
    class BrokenWebSocket extends WebSocket {
      constructor(_url, protocols) { super("ws://127.0.0.1:9/socket/websocket", protocols); this.on("error", () => {}); }
    }
    const store = new Map();
    const sessionStorage = { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)), removeItem: (k) => store.delete(k) };
    const s = new Socket(HTTP_MOUNT, { ...FAST, transport: BrokenWebSocket, longPollFallbackMs: 300, sessionStorage });
    s.connect();
    t.after(() => s.disconnect());
    const ch = s.channel(uniq("room:"), { user: "fallback" });
    await join(ch, 6000);
    assert.equal(s.transport, LongPoll);
    assert.deepEqual(await push(ch, "echo", { via: "fallback" }), { status: "ok", response: { via: "fallback" } });
    assert.equal(store.get("phx:fallback:LongPoll"), "true", "the fallback is remembered for the session");
  });
}
