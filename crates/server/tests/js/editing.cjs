// The collaborative-editing wire contract (protocol-spec/editing.md), checked with
// the stock phoenix.js client against a running phx-server.
// Usage: node editing.cjs ws://127.0.0.1:PORT/socket http://127.0.0.1:ADMIN TOKEN http://127.0.0.1:PORT
// Prints "ok <check>" per check, "measured <figure>" lines, and exits 0 when all passed.
const { Socket } = require("phoenix");
const WebSocket = require("ws");
const { isDeepStrictEqual: same } = require("node:util");

const [url, adminUrl, token, httpUrl] = process.argv.slice(2);
let passed = 0;
const fail = (why) => { console.error("FAIL", why); process.exit(1); };
const ok = (what) => { passed += 1; console.log("ok", what); };
const check = (cond, what, detail) => { if (!cond) fail(what + (detail === undefined ? "" : ": " + JSON.stringify(detail))); };
let step = "start";
const dump = [];
setTimeout(() => fail("timed out after " + passed + " checks, waiting at: " + step + " " + JSON.stringify(dump.map((c) => [c.topic, c.seen.map((m) => m.event)]))), 30000).unref();

const sockets = [];
function connect(params = {}) {
  const socket = new Socket(url, { transport: WebSocket, params, reconnectAfterMs: () => 50, rejoinAfterMs: () => 50 });
  socket.connect();
  sockets.push(socket);
  return socket;
}

const { join, push, next, count, sleep } = require("./editing_helpers.cjs")(fail, 3000);

async function http(method, base, path, { auth, body } = {}) {
  const headers = {};
  if (auth) headers.authorization = auth;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, text };
}

(async () => {
  const topic = "edit:entity:1";
  const ann1 = connect({ user_id: "ann" });
  const bob = connect({ user_id: "bob" });
  const ann2 = connect({ user_id: "ann" });
  const anon = connect();

  // ---- roles: first in line owns, everyone after watches; one user's two tabs differ ----
  const a = await join(ann1, topic, { user: { id: "ann", name: "Ann" } });
  check(a.status === "ok" && a.reply.role === "owner", "first joiner is owner", a);
  check(a.reply.owner.key === "ann" && a.reply.owner.name === "Ann" && Number.isInteger(a.reply.owner.joined_at), "owner gets its own meta", a.reply);
  check(a.reply.form === null && a.reply.record.id === "1" && typeof a.reply.record.title === "string", "no unsaved form; the saved record", a.reply);
  ok("first connection is owner, gets its own meta, form null, the saved record");

  const b = await join(bob, topic, { user: { id: "bob", name: "Bob" } });
  check(b.reply.role === "spectator" && b.reply.owner.key === "ann", "second joiner is spectator", b.reply);
  const a2 = await join(ann2, topic, { user: { id: "ann", name: "Ann" } });
  check(a2.reply.role === "spectator", "same user, second tab, is spectator", a2.reply);
  const anonJoin = await join(anon, topic, { user: { name: "Nobody" } });
  check(anonJoin.reply.role === "spectator", "anonymous spectator", anonJoin.reply);
  ok("FIFO: later connections are spectators, the same user's second tab too");

  // ---- presence: key = user id (anonymous: unique per connection), metas with name, joined_at, phx_ref ----
  const presence = b.channel.presence;
  await new Promise((resolve) => {
    const test = () => {
      const keys = presence.list((k) => k).sort();
      if (keys.length === 3) resolve();
    };
    presence.onSync(test); test();
  });
  const entries = {};
  presence.list((key, { metas }) => { entries[key] = metas; });
  check(entries.ann && entries.ann.length === 2 && entries.bob && entries.bob.length === 1, "presence keys", entries);
  const anonKey = Object.keys(entries).find((k) => k !== "ann" && k !== "bob");
  check(anonKey && anonKey !== "ann" && entries[anonKey][0].name === "Nobody", "anonymous key", entries);
  for (const m of Object.values(entries).flat()) {
    check(typeof m.name === "string" && Number.isInteger(m.joined_at) && typeof m.phx_ref === "string" && Number.isInteger(m.seq), "meta fields", m);
  }
  ok("presence: key = user id, an anonymous connection has its own key, metas carry name/joined_at/seq/phx_ref");

  // ---- ties: concurrent joins; the owner is first by (joined_at, seq) for every client ----
  const tieTopic = "edit:entity:2";
  const racers = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => join(connect({ user_id: "r" + i }), tieTopic, { user: { id: "r" + i, name: "R" + i } })));
  const owners = racers.filter((r) => r.reply.role === "owner");
  check(owners.length === 1, "exactly one owner among concurrent joins", racers.map((r) => r.reply.role));
  const order = racers.map((r) => r.reply.meta).sort((x, y) => (x.joined_at - y.joined_at) || (x.seq - y.seq));
  check(order[0].seq === owners[0].reply.meta.seq, "the owner is first by (joined_at, seq)", order);
  check(new Set(order.map((m) => m.seq)).size === order.length, "seqs are distinct", order);
  check(racers.every((r) => r.reply.owner.seq === order[0].seq), "everyone names the same owner", racers.map((r) => r.reply.owner));
  const sameMs = order.some((m, i) => i > 0 && m.joined_at === order[i - 1].joined_at);
  ok("ties: one owner among 6 concurrent joins, first by (joined_at, seq), named the same by all" + (sameMs ? " (joined_at ties occurred)" : ""));
  racers.forEach((r) => r.channel.leave());

  // ---- spectators cannot change anything ----
  for (const [event, payload] of [["form_change", { params: { title: "hijack" } }], ["save", { params: { title: "hijack" } }], ["delete", {}]]) {
    const r = await push(b.channel, event, payload);
    check(r.status === "error" && r.r.reason === "not_owner", "spectator " + event + " refused", r);
  }
  ok("spectator form_change / save / delete get error not_owner");

  // ---- form_change: everyone else gets it with `by`; the sender does not ----
  const draft = { title: "Acme (draft)", body: "typing…" };
  const bFrom = b.channel.seen.length;
  const fc = await push(a.channel, "form_change", { params: draft });
  check(fc.status === "ok", "form_change reply ok", fc);
  const gotB = await next(b.channel, "form_change", bFrom);
  const gotA2 = await next(a2.channel, "form_change");
  check(same(gotB.params, draft) && gotB.by === "ann", "spectator sees params and by", gotB);
  check(gotA2.by === "ann", "the owner's other tab sees it too", gotA2);
  ok("owner's form_change reaches every other connection with by = sender's key");

  // ---- late joiner gets the unsaved form ----
  const late = await join(connect(), topic, { user: { id: "cy", name: "Cy" } });
  check(late.reply.role === "spectator" && same(late.reply.form, draft), "late joiner gets the form", late.reply);
  ok("late joiner's join reply carries the unsaved form");
  check(count(a.channel, "form_change") === 0, "the sender does not get its own form_change", a.channel.seen);
  ok("the sender got no form_change of its own");

  // ---- stats and the admin API ----
  const noAuth = await http("GET", adminUrl, "/api/stats");
  check(noAuth.status === 401, "stats without token is 401", noAuth);
  const badAuth = await http("GET", adminUrl, "/api/stats", { auth: "Bearer nope" });
  check(badAuth.status === 401, "stats with a wrong token is 401", badAuth);
  const stats = await http("GET", adminUrl, "/api/stats", { auth: "Bearer " + token });
  check(stats.status === 200, "stats with token", stats);
  const s = JSON.parse(stats.text);
  // --auth none: a user_id in the connect params is unverified, so every socket is anonymous.
  check(s.sockets >= 5 && s.sessions.signed_in === 0 && s.sessions.anonymous >= 5 && s.users === 0, "socket counts", s);
  check(s.topics[topic] === 5 && s.presences >= 5, "topic members and presences", s);
  ok("GET /api/stats: 401 without / with a wrong token; counts sockets, sessions, users, topics, presences");
  const metrics = await http("GET", adminUrl, "/metrics", { auth: "Bearer " + token });
  check(metrics.status === 200 && /phx_sockets_open \d+/.test(metrics.text) && /phx_backpressure_waits_total \d+/.test(metrics.text) && /phx_joins_total\{result="ok"\} \d+/.test(metrics.text) && /phx_presences \d+/.test(metrics.text) && /phx_disconnects_total\{reason="closed"\}/.test(metrics.text), "metrics", metrics.text.slice(0, 400));
  check((await http("GET", adminUrl, "/metrics")).status === 401, "metrics without token is 401");
  ok("GET /metrics: Prometheus text (connections, joins, messages, disconnects by reason, presences), 401 without token");
  for (const path of ["/api/stats", "/metrics", "/api/broadcast"]) {
    const r = await http(path === "/api/broadcast" ? "POST" : "GET", httpUrl, path, { auth: "Bearer " + token, body: path === "/api/broadcast" ? {} : undefined });
    check(r.status === 404, "main port does not serve " + path, r);
  }
  ok("the main port serves none of the admin paths (404)");

  // ---- events:<kind>: list, create, and application broadcasts ----
  const watcher = await join(connect({ user_id: "w" }), "events:entity", {});
  check(watcher.status === "ok" && Array.isArray(watcher.reply.records) && watcher.reply.records.some((r) => r.id === "1"), "events join lists records", watcher.reply);
  ok("events:entity join reply lists every record");
  const bc = { topic: "events:entity", event: "updated", payload: { id: "x", record: { id: "x", title: "from the backend" } } };
  check((await http("POST", adminUrl, "/api/broadcast", { body: bc })).status === 401, "broadcast without token is 401");
  check(count(watcher.channel, "updated") === 0, "nothing was broadcast without the token");
  const sent = await http("POST", adminUrl, "/api/broadcast", { auth: "Bearer " + token, body: bc });
  check(sent.status === 200, "broadcast with token", sent);
  const fromBackend = await next(watcher.channel, "updated");
  check(fromBackend.record.title === "from the backend", "broadcast delivered", fromBackend);
  check((await http("POST", adminUrl, "/api/broadcast", { auth: "Bearer " + token, body: { topic: "" } })).status === 400, "bad broadcast body is 400");
  ok("POST /api/broadcast: 401 without token (nothing sent), delivered with it, 400 on a bad body");

  // ---- save: errors, then success: saved to all, updated on events ----
  const bad = await push(a.channel, "save", { params: { title: "" } });
  check(bad.status === "error" && Array.isArray(bad.r.errors.title), "invalid save", bad);
  ok("invalid save gets error {errors: {title: [...]}}");

  // ---- promotion: the owner's connection closes; the next in line (bob) is told, nobody else ----
  const t0 = Date.now();
  ann1.disconnect();
  const role = await next(b.channel, "role");
  const promotedMs = Date.now() - t0;
  check(role.role === "owner" && role.owner.key === "bob", "bob promoted with his own meta", role);
  check(promotedMs < 1000, "promotion is prompt", promotedMs);
  console.log("measured promotion_ms " + promotedMs);
  ok("owner's socket closes: the next connection gets role owner");
  const cont = await push(b.channel, "form_change", { params: { ...draft, body: "bob continues" } });
  check(cont.status === "ok", "new owner edits", cont);
  await next(late.channel, "form_change", 0);
  check(count(a2.channel, "role") === 0 && count(late.channel, "role") === 0 && count(anonJoin.channel, "role") === 0, "nobody else is told they own", {});
  ok("the new owner edits on from the kept form; nobody else got role");

  const updatedFrom = watcher.channel.seen.length;
  const good = await push(b.channel, "save", { params: { title: "Acme Inc.", body: "saved by bob" } });
  check(good.status === "ok" && good.r.record.id === "1" && good.r.record.title === "Acme Inc.", "save ok", good);
  for (const ch of [b.channel, a2.channel, late.channel]) {
    const saved = await next(ch, "saved");
    check(saved.record.title === "Acme Inc.", "saved to everyone", saved);
  }
  const upd = await next(watcher.channel, "updated", updatedFrom);
  check(upd.id === "1" && upd.record.title === "Acme Inc.", "updated on events", upd);
  const afterSave = await join(connect(), topic, { user: { id: "dee", name: "Dee" } });
  check(afterSave.reply.form === null && afterSave.reply.record.title === "Acme Inc.", "form is null after save", afterSave.reply);
  ok("save: reply {record}, saved to everyone (owner included), updated on events:entity, form null after");

  // ---- create ----
  const creator = await join(connect(), "events:entity", {});
  const badCreate = await push(creator.channel, "create", { params: { title: "" } });
  check(badCreate.status === "error" && Array.isArray(badCreate.r.errors.title), "invalid create", badCreate);
  const created = await push(creator.channel, "create", { params: { title: "Initech", body: "" } });
  check(created.status === "ok" && typeof created.r.record.id === "string" && created.r.record.title === "Initech", "create ok", created);
  const id = created.r.record.id;
  for (const ch of [creator.channel, watcher.channel]) {
    const ev = await next(ch, "created");
    check(ev.id === id && ev.record.title === "Initech", "created to every member", ev);
  }
  ok("create: server-chosen id, created {id, record} to every member including the creator; invalid → errors");

  // ---- delete ----
  const newTopic = "edit:entity:" + id;
  const p = await join(connect(), newTopic, { user: { id: "pat", name: "Pat" } });
  const q = await join(connect(), newTopic, { user: { id: "quinn", name: "Quinn" } });
  check(p.reply.role === "owner" && q.reply.role === "spectator", "roles on the new record", [p.reply, q.reply]);
  dump.push(p.channel, q.channel, watcher.channel);
  step = "delete reply";
  const del = await push(p.channel, "delete", {});
  check(del.status === "ok", "delete ok", del);
  step = "deleted on q";
  const gone = await next(q.channel, "deleted");
  check(gone.id === id, "deleted on the topic", gone);
  step = "q closed";
  await q.channel.closed;
  step = "p closed";
  await p.channel.closed;
  step = "deleted on events";
  const evDel = await next(watcher.channel, "deleted");
  check(evDel.id === id, "deleted on events", evDel);
  const qi = q.channel.seen.findIndex((m) => m.event === "deleted");
  const qc = q.channel.seen.findIndex((m) => m.event === "phx_close");
  check(qi >= 0 && qc > qi, "deleted comes before phx_close", q.channel.seen.map((m) => m.event));
  const again = await join(connect(), newTopic, { user: { id: "pat", name: "Pat" } });
  check(again.status === "error" && again.reply.reason === "not_found", "later join is not_found", again);
  ok("delete: reply ok, deleted on the topic and events:entity, every editor's channel closed, later join not_found");

  // ---- not found ----
  for (const t of ["edit:nope:1", "edit:entity:does-not-exist", "events:nope"]) {
    const r = await join(connect(), t, { user: { id: "x", name: "X" } });
    check(r.status === "error" && r.reply.reason === "not_found", "not_found " + t, r);
  }
  const post = await join(connect(), "edit:post:docs/my-post", { user: { id: "x", name: "X" } });
  check(post.status === "ok" && post.reply.record.id === "docs/my-post", "ids with slashes", post);
  ok("unknown kind or id → not_found; ids may contain slashes");

  // ---- refusals are counted in /metrics by kind and reason ----
  const counted = (await http("GET", adminUrl, "/metrics", { auth: "Bearer " + token })).text;
  const refusals = (kind, reason) => {
    const m = counted.match(new RegExp('phx_editing_refusals_total\\{kind="' + kind + '",reason="' + reason + '"\\} (\\d+)'));
    return m ? Number(m[1]) : null;
  };
  const want = [["entity", "not_owner", 3], ["entity", "invalid", 2], ["entity", "not_found", 2], ["entity", "bad_request", 0], ["unknown", "not_found", 2]];
  for (const [kind, reason, n] of want) check(refusals(kind, reason) === n, "refusals " + kind + " " + reason, [refusals(kind, reason), counted.split("\n").filter((l) => l.includes("refusals"))]);
  ok("refusals (not_owner, invalid, not_found, unknown kind) counted in /metrics by kind and reason");

  sockets.forEach((s) => s.disconnect());
  console.log(passed + " passed, 0 failed");
  process.exit(0);
})().catch((err) => fail(err && err.stack ? err.stack : String(err)));
