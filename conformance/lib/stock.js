// The stock phoenix.js clients (1.8.x and 1.7.x), used only through their public API:
// Socket, Channel, Push.receive, Presence, LongPoll.
"use strict";
const WebSocket = require("ws");
const { clients } = require("./env");
const { WS_MOUNT, HTTP_MOUNT } = require("./config");
const { within } = require("./util");

/** Options every stock socket gets: short timeouts and fast retries, so cases stay quick. */
const FAST = {
  timeout: 5000,
  reconnectAfterMs: () => 50,
  rejoinAfterMs: () => 100,
};

/**
 * A connected stock Socket of generation `gen` over WebSocket ("ws") or long-poll
 * ("longpoll"), disconnected when the case ends.
 */
function openSocket(t, gen, { params = {}, transport = "ws", ...opts } = {}) {
  const { Socket, LongPoll } = clients[gen];
  const socket = transport === "longpoll"
    ? new Socket(HTTP_MOUNT, { transport: LongPoll, params, ...FAST, ...opts })
    : new Socket(WS_MOUNT, { transport: WebSocket, params, ...FAST, ...opts });
  socket.connect();
  t.after(() => socket.disconnect());
  return socket;
}

/** Resolves with the join reply's response when ok; rejects on error or timeout. */
function join(channel, ms = 8000) {
  return within(new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", resolve)
      .receive("error", (r) => reject(new Error("join error " + JSON.stringify(r))))
      .receive("timeout", () => reject(new Error("join timeout")));
  }), ms, "join reply");
}

/** Resolves with the first join outcome: {status: "ok"|"error"|"timeout", response}. */
function joinOutcome(channel) {
  return new Promise((resolve) => {
    channel.join()
      .receive("ok", (r) => resolve({ status: "ok", response: r }))
      .receive("error", (r) => resolve({ status: "error", response: r }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  });
}

/** Pushes and resolves with {status, response} ("timeout" has no response). */
function push(channel, event, payload, timeout = 5000) {
  return new Promise((resolve) => {
    channel.push(event, payload, timeout)
      .receive("ok", (r) => resolve({ status: "ok", response: r }))
      .receive("error", (r) => resolve({ status: "error", response: r }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  });
}

/** Resolves with the payload of the next `event` on the channel. */
function nextEvent(channel, event, ms = 3000) {
  let ref;
  return within(new Promise((resolve) => {
    ref = channel.on(event, (payload) => { channel.off(event, ref); resolve(payload); });
  }), ms, `${event} on ${channel.topic}`).finally(() => channel.off(event, ref));
}

/** Collects every payload of `event` on the channel into an array (live). */
function collect(channel, event) {
  const got = [];
  channel.on(event, (payload) => got.push(payload));
  return got;
}

/** A Presence of generation gen with hooks that record what they saw. */
function trackPresence(gen, channel) {
  const { Presence } = clients[gen];
  const presence = new Presence(channel);
  const log = { syncs: 0, joins: [], leaves: [] };
  presence.onSync(() => { log.syncs += 1; });
  presence.onJoin((key, current, joined) => log.joins.push({ key, current, joined }));
  presence.onLeave((key, current, left) => log.leaves.push({ key, current, left }));
  /** key -> metas, as plain data, sorted by key. */
  const view = () => {
    const out = {};
    presence.list((key, p) => [key, p]).sort(([a], [b]) => (a < b ? -1 : 1))
      .forEach(([key, p]) => { out[key] = JSON.parse(JSON.stringify(p.metas)); });
    return out;
  };
  return { presence, log, view, keys: () => Object.keys(view()) };
}

module.exports = { clients, openSocket, join, joinOutcome, push, nextEvent, collect, trackPresence, FAST };
