// What the editing contract scripts (editing.cjs, editing_cluster.cjs) share: a
// channel that records every event it gets, pushes that resolve with their
// status, and waiting for an event. `fail` is the calling script's own.
const { Presence } = require("phoenix");

module.exports = function helpers(fail, pushTimeout) {
  // Joins and records every event the channel gets, in order; the channel also
  // keeps a phoenix.js Presence mirror and a promise of its close.
  function join(socket, topic, payload) {
    const channel = socket.channel(topic, payload);
    channel.seen = [];
    const orig = channel.onMessage.bind(channel);
    channel.onMessage = (event, p, ref) => { if (!event.startsWith("chan_reply_")) channel.seen.push({ event, payload: p }); return orig(event, p, ref); };
    channel.closed = new Promise((resolve) => channel.onClose(resolve));
    channel.presence = new Presence(channel);
    return new Promise((resolve) => {
      channel.join()
        .receive("ok", (reply) => resolve({ channel, status: "ok", reply }))
        .receive("error", (reply) => resolve({ channel, status: "error", reply }))
        .receive("timeout", () => fail("join timeout " + topic));
    });
  }

  function push(channel, event, payload) {
    return new Promise((resolve) => {
      channel.push(event, payload, pushTimeout)
        .receive("ok", (r) => resolve({ status: "ok", r }))
        .receive("error", (r) => resolve({ status: "error", r }))
        .receive("timeout", () => fail(event + " timed out"));
    });
  }

  // The first event `event` the channel gets from index `from` on (already seen or later).
  function next(channel, event, from = 0) {
    return new Promise((resolve) => {
      const poll = () => {
        const hit = channel.seen.slice(from).find((m) => m.event === event);
        if (hit) resolve(hit.payload); else setTimeout(poll, 5);
      };
      poll();
    });
  }

  const count = (channel, event) => channel.seen.filter((m) => m.event === event).length;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  return { join, push, next, count, sleep };
};
