// The stock phoenix.js client passing a signed token the way Phoenix apps do,
// `new Socket("/socket", {params: {token}})`, over WebSocket and long-poll.
// Usage: node auth_client.cjs ws://127.0.0.1:PORT/socket GOOD_TOKEN EXPIRED_TOKEN
// The server's "whoami:*" channel replies to a join with the socket's identity.
const { Socket, LongPoll } = require("phoenix");
const WebSocket = require("ws");

const [url, good, expired] = process.argv.slice(2);
let passed = 0;
const fail = (why) => { console.error("FAIL", why); process.exit(1); };
const ok = (what) => { passed += 1; console.log("ok", what); };
setTimeout(() => fail("timed out after " + passed + " checks"), 15000).unref();

function socket(kind, token) {
  const opts = { params: { token }, reconnectAfterMs: () => 60000, longPollFallbackMs: null };
  opts.transport = kind === "longpoll" ? LongPoll : WebSocket;
  const s = new Socket(url, opts);
  s.connect();
  return s;
}

function whoami(kind, token) {
  return new Promise((resolve, reject) => {
    const s = socket(kind, token);
    const ch = s.channel("whoami:" + kind, {});
    ch.join()
      .receive("ok", (who) => { s.disconnect(); resolve(who); })
      .receive("error", (e) => { s.disconnect(); reject(e); })
      .receive("timeout", () => { s.disconnect(); reject("join timeout"); });
  });
}

// A refused token never opens the socket: the error callback fires, join never answers.
function refused(kind, token) {
  return new Promise((resolve) => {
    const s = socket(kind, token);
    let opened = false;
    s.onOpen(() => { opened = true; });
    s.onError(() => { s.disconnect(); resolve(!opened); });
  });
}

(async () => {
  for (const kind of ["websocket", "longpoll"]) {
    const who = await whoami(kind, good);
    if (who.user_id !== "u-9" || who.name !== "Bob") fail(kind + ": " + JSON.stringify(who));
    ok(kind + " identity " + who.user_id + " " + who.name);
    if (!(await refused(kind, expired))) fail(kind + ": an expired token opened the socket");
    ok(kind + " refuses an expired token");
  }
  console.log(passed + " passed, 0 failed");
  process.exit(0);
})().catch((e) => fail(String(e && e.stack || e)));
