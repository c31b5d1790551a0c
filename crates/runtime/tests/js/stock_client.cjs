// Drives the server with the stock phoenix.js client, as a browser app would.
// Usage: node stock_client.cjs ws://127.0.0.1:PORT/socket
// Prints one line per check and exits 0 when every check passed.
const { Socket, Presence } = require("phoenix");
const WebSocket = require("ws");

const url = process.argv[2];
const checks = [];
const fail = (why) => { console.error("FAIL", why); process.exit(1); };
const ok = (what) => { checks.push(what); console.log("ok", what); };
setTimeout(() => fail("timed out after checks: " + JSON.stringify(checks)), 15000).unref();

function connect(params) {
  const socket = new Socket(url, { transport: WebSocket, params, reconnectAfterMs: () => 50, rejoinAfterMs: () => 50 });
  socket.connect();
  return socket;
}

function joinOk(channel) {
  return new Promise((resolve, reject) => {
    channel.join().receive("ok", resolve).receive("error", reject).receive("timeout", () => reject("join timeout"));
  });
}

function push(channel, event, payload) {
  return new Promise((resolve, reject) => {
    channel.push(event, payload, 2000)
      .receive("ok", (r) => resolve({ status: "ok", r }))
      .receive("error", (r) => resolve({ status: "error", r }))
      .receive("timeout", () => reject(event + " timed out"));
  });
}

(async () => {
  const topic = "room:stock-" + process.pid;
  const a = connect({ user: "alice" });
  const b = connect({ user: "bob" });
  const chA = a.channel(topic, { user: "alice" });
  const chB = b.channel(topic, { user: "bob" });

  const presenceA = new Presence(chA);
  const synced = new Promise((resolve) => presenceA.onSync(() => {
    const users = presenceA.list((id) => id).sort();
    if (users.join(",") === "alice,bob") resolve(users);
  }));

  await joinOk(chA);
  ok("join");
  await joinOk(chB);

  const echo = await push(chA, "echo", { hello: "world" });
  if (echo.status !== "ok" || echo.r.hello !== "world") fail("echo: " + JSON.stringify(echo));
  ok("push and reply");

  const got = new Promise((resolve) => chB.on("shout", resolve));
  await push(chA, "shout", { body: "hi all" });
  const shout = await got;
  if (shout.body !== "hi all") fail("broadcast payload: " + JSON.stringify(shout));
  ok("broadcast received by another client");

  await synced;
  ok("presence sync lists both users");

  const left = new Promise((resolve) => presenceA.onLeave((id, current) => { if (id === "bob" && current.metas.length === 0) resolve(); }));
  chB.leave();
  await left;
  ok("presence leave seen after channel.leave()");

  // A crash: the client gets phx_error, rejoins by itself, and the channel works again.
  let rejoined;
  const again = new Promise((resolve) => { rejoined = resolve; });
  let errored = false;
  chA.onError(() => { errored = true; });
  chA.joinPush.receive("ok", () => { if (errored) rejoined(); });
  chA.push("crash", {});
  await again;
  ok("crash then automatic rejoin");
  const echo2 = await push(chA, "echo", { n: 2 });
  if (echo2.r.n !== 2) fail("echo after rejoin");
  ok("channel works after rejoin");

  a.disconnect(); b.disconnect();
  console.log(`${checks.length} passed, 0 failed`);
  process.exit(0);
})().catch((e) => fail(String(e && e.stack || e)));
