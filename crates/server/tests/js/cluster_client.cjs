// One stock phoenix.js client for the cluster tests (crates/server/tests/cluster.rs).
// Usage: node cluster_client.cjs <socket url> <topic> <user> [websocket|longpoll [<other host:port>]]
// With longpoll and another host, every other HTTP request goes to that host
// instead (a load balancer without session affinity).
// Joins <topic> as <user> and prints one line per event:
//   joined | presence <sorted keys> | shout <body> | error <why>
//   update <key> <status> <whether phx_ref_prev is the replaced meta's ref>
// Reads commands on stdin: "shout <body>", "update <status>" (update_meta),
// "hosts" (how many hosts served, each at least 3 requests), "quit".
const { Socket, Presence, LongPoll } = require("phoenix");
const WebSocket = require("ws");
const readline = require("readline");

const [url, topic, user, kind, other] = process.argv.slice(2);
const opts = { reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 };
const hosts = {};
if (kind === "longpoll") {
  opts.transport = LongPoll;
  opts.longPollFallbackMs = null;
  const realFetch = globalThis.fetch;
  let n = 0;
  globalThis.fetch = (endPoint, options) => {
    const target = new URL(endPoint);
    if (other && n++ % 2 === 1) target.host = other;
    hosts[target.host] = (hosts[target.host] || 0) + 1;
    return realFetch(target.toString(), options);
  };
} else {
  opts.transport = WebSocket;
}
const socket = new Socket(url, opts);
socket.connect();
const channel = socket.channel(topic, { user });
const presence = new Presence(channel);
presence.onSync(() => console.log("presence " + presence.list((key) => key).sort().join(",")));
channel.on("shout", (p) => console.log("shout " + p.body));
// An update: the joining meta's phx_ref_prev names the leaving meta's phx_ref.
channel.on("presence_diff", (diff) => {
  for (const [key, entry] of Object.entries(diff.joins)) {
    for (const meta of entry.metas) {
      if (!meta.phx_ref_prev) continue;
      const left = (diff.leaves[key] || { metas: [] }).metas.map((m) => m.phx_ref);
      console.log("update " + key + " " + meta.status + " " + left.includes(meta.phx_ref_prev));
    }
  }
});
channel.join()
  .receive("ok", () => console.log("joined"))
  .receive("error", (e) => console.log("error " + JSON.stringify(e)));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, ...rest] = line.split(" ");
  if (cmd === "shout") {
    channel.push("shout", { body: rest.join(" ") })
      .receive("error", (e) => console.log("error " + JSON.stringify(e)));
  } else if (cmd === "update") {
    channel.push("update_meta", { status: rest.join(" ") });
  } else if (cmd === "hosts") {
    console.log("hosts " + Object.keys(hosts).length + " " + Object.values(hosts).every((n) => n >= 3));
  } else if (cmd === "quit") {
    channel.leave().receive("ok", () => process.exit(0));
    setTimeout(() => process.exit(0), 1000);
  }
});
process.stdin.on("end", () => process.exit(0));
