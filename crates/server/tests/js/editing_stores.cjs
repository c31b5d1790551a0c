// The records stores over the wire with stock phoenix.js (crates/server/tests/editing_stores.rs).
// Usage:
//   node editing_stores.cjs write <ws url>          create + save a record; prints "id <id>"
//   node editing_stores.cjs read <ws url> <id>      the record is there after a restart
//   node editing_stores.cjs pg <wsA> <adminA> <wsB> <adminB> <token>
//     two nodes on one PostgreSQL: asks the test for database actions by printing
//     "sql <statement>", "stop db", "start db" and waiting for a line "done" on stdin.
// Prints "ok <check>" per check, "measured <figure>" lines, and ends with
// "<n> passed, 0 failed" (exit 0) or "error <why>" (exit 1).
const { Socket } = require("phoenix");
const WebSocket = require("ws");
const readline = require("readline");

const [mode, ...args] = process.argv.slice(2);
let passed = 0;
let step = "start";
const fail = (why) => { console.log("error " + why); process.exit(1); };
const ok = (what) => { passed += 1; console.log("ok " + what); };
const check = (cond, what, detail) => { if (!cond) fail(what + (detail === undefined ? "" : ": " + JSON.stringify(detail))); };
setTimeout(() => fail("timed out after " + passed + " checks, at: " + step), 150000).unref();
const sockets = [];
function connect(url, params = {}) {
  const socket = new Socket(url, { transport: WebSocket, params, reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 });
  socket.connect();
  sockets.push(socket);
  return socket;
}
const { join, push, next, count, sleep } = require("./editing_helpers.cjs")(fail, 8000);
const editor = (url, topic, id) => join(connect(url), topic, { user: { id, name: id.toUpperCase() } });
const done = () => { console.log(passed + " passed, 0 failed"); sockets.forEach((s) => s.disconnect()); process.exit(0); };

const stdin = [];
readline.createInterface({ input: process.stdin }).on("line", (l) => stdin.push(l));
async function ask(what) {
  console.log(what);
  for (;;) {
    const i = stdin.indexOf("done");
    if (i >= 0) { stdin.splice(i, 1); return; }
    await sleep(10);
  }
}
// Waits (bounded by the script's own timeout) until `cond()` holds.
async function until(cond) { while (!(await cond())) await sleep(20); }
const stats = async (admin, token) => (await fetch(admin + "/api/stats", { headers: { authorization: "Bearer " + token } })).json();

async function write([ws]) {
  step = "create";
  const list = await join(connect(ws), "events:entity", {});
  check(list.status === "ok" && list.reply.total >= 2 && list.reply.records.some((r) => r.id === "1" && r.version >= 1), "seeded records with versions", list.reply);
  const created = await push(list.channel, "create", { params: { title: "Kept", body: "across restarts" } });
  check(created.status === "ok" && created.r.record.version === 1, "create", created);
  const id = created.r.record.id;
  const ed = await editor(ws, "edit:entity:" + id, "ann");
  const saved = await push(ed.channel, "save", { params: { title: "Kept and saved", body: "v2" } });
  check(saved.status === "ok" && saved.r.record.version === 2 && saved.r.record.updated_by === "ANN", "save raises the version, says who saved", saved);
  ok("created and saved on SQLite (version 2)");
  console.log("id " + id);
  done();
}

async function read([ws, id]) {
  step = "read";
  const ed = await editor(ws, "edit:entity:" + id, "bob");
  check(ed.status === "ok" && ed.reply.record.title === "Kept and saved" && ed.reply.record.version === 2, "the record survived the restart", ed.reply);
  const list = await join(connect(ws), "events:entity", {});
  check(list.reply.records.some((r) => r.id === id), "listed after the restart", list.reply);
  ok("after a restart of phx-server the record is there, same version");
  done();
}

async function pg([wsA, adminA, wsB, adminB, token]) {
  // ---- create on A, seen once on B ----
  step = "create";
  const listA = await join(connect(wsA), "events:entity", {});
  const listB = await join(connect(wsB), "events:entity", {});
  const created = await push(listA.channel, "create", { params: { title: "Shared" } });
  check(created.status === "ok", "create on A", created);
  const id = created.r.record.id;
  const onB = await next(listB.channel, "created");
  check(onB.id === id && onB.record.title === "Shared" && onB.record.version === 1, "created on B", onB);
  const onA = await next(listA.channel, "created");
  check(onA.id === id, "created on A", onA);
  await sleep(300);
  check(count(listB.channel, "created") === 1 && count(listA.channel, "created") === 1, "announced once per change", [count(listA.channel, "created"), count(listB.channel, "created")]);
  ok("create on A: created once on A's and B's events:entity (ids from the database: " + id + ")");

  // ---- an UPDATE through psql reaches editors and lists on both nodes ----
  step = "external update";
  const topic = "edit:entity:" + id;
  const ann = await editor(wsA, topic, "ann");
  // B's join comes after B has heard of ann (else both would own until presence crosses).
  await until(async () => ((await stats(adminB, token)).presences_by_topic[topic] || 0) === 1);
  const bob = await editor(wsB, topic, "bob");
  check(ann.reply.role === "owner" && bob.reply.role === "spectator", "roles", [ann.reply, bob.reply]);
  await push(ann.channel, "form_change", { params: { title: "Ann's draft" } });
  const t0 = Date.now();
  await ask("sql UPDATE phx_records SET record = record || '{\"title\": \"From psql\"}' WHERE kind = 'entity' AND id = '" + id + "'");
  for (const ch of [ann.channel, bob.channel]) {
    const upd = await next(ch, "updated");
    check(upd.record.title === "From psql" && upd.record.version === 2, "editor gets updated {record}", upd);
  }
  console.log("measured update_to_event_ms " + (Date.now() - t0));
  for (const ch of [listA.channel, listB.channel]) {
    const upd = await next(ch, "updated");
    check(upd.id === id && upd.record.version === 2, "list gets updated", upd);
  }
  await sleep(300);
  check([ann.channel, bob.channel, listA.channel, listB.channel].every((c) => count(c, "updated") === 1), "each once", {});
  ok("UPDATE in psql: updated {record} to the editors and updated on events:entity on both nodes, once each");

  // ---- the owner's form started from version 1: a save is a conflict ----
  step = "conflict";
  const stale = await push(ann.channel, "save", { params: { title: "Ann's draft" } });
  check(stale.status === "error" && stale.r.reason === "conflict" && stale.r.record.title === "From psql" && stale.r.record.version === 2, "stale save is a conflict with the stored record", stale);
  const again = await join(connect(wsB), "events:entity", {});
  check(again.reply.records.find((r) => r.id === id).title === "From psql", "nothing was written", again.reply);
  const over = await push(ann.channel, "save", { params: { title: "Ann overwrites" }, version: 2 });
  check(over.status === "ok" && over.r.record.version === 3, "a save carrying the stored version goes through", over);
  const savedB = await next(bob.channel, "saved");
  check(savedB.record.version === 3, "B's editor gets saved", savedB);
  ok("stale save → conflict {record}, nothing written; a save with the new version overwrites");

  // ---- a DELETE through psql closes every editor on both nodes ----
  step = "external delete";
  const doomed = await push(listA.channel, "create", { params: { title: "Doomed" } });
  const dt = "edit:entity:" + doomed.r.record.id;
  const d1 = await editor(wsA, dt, "dan");
  await until(async () => ((await stats(adminB, token)).presences_by_topic[dt] || 0) === 1);
  const d2 = await editor(wsB, dt, "dot");
  await ask("sql DELETE FROM phx_records WHERE kind = 'entity' AND id = '" + doomed.r.record.id + "'");
  for (const ch of [d1.channel, d2.channel]) {
    const gone = await next(ch, "deleted");
    check(gone.id === doomed.r.record.id, "deleted to the editors", gone);
    await ch.closed;
  }
  for (const ch of [listA.channel, listB.channel]) {
    const gone = await next(ch, "deleted");
    check(gone.id === doomed.r.record.id, "deleted on the lists", gone);
  }
  ok("DELETE in psql: deleted then phx_close to the editors on both nodes, deleted on both lists");

  // ---- the database stops: unavailable, sockets and presence keep working ----
  step = "database down";
  await ask("stop db");
  const save = await push(ann.channel, "save", { params: { title: "while down" } });
  check(save.status === "error" && save.r.reason === "unavailable", "save while down is unavailable", save);
  const j = await editor(wsB, "edit:entity:1", "cy");
  check(j.status === "error" && j.reply.reason === "unavailable", "join while down is unavailable", j);
  const l = await join(connect(wsA), "events:entity", {});
  check(l.status === "error" && l.reply.reason === "unavailable", "events join while down is unavailable", l);
  const from = bob.channel.seen.length;
  const typed = await push(ann.channel, "form_change", { params: { title: "typing on" } });
  check(typed.status === "ok", "form changes go on", typed);
  const seen = await next(bob.channel, "form_change", from);
  check(seen.params.title === "typing on", "across nodes", seen);
  const dee = await editor(wsA, topic, "dee");
  check(dee.status === "error" && dee.reply.reason === "unavailable", "new editors cannot load the record", dee);
  await until(async () => (await (await fetch(adminA + "/api/stats", { headers: { authorization: "Bearer " + token } })).json()).database === "down");
  ok("database stopped: save, join and events join answer unavailable; live form and presence go on; /api/stats says down");

  // ---- started again: works without restarting phx-server ----
  step = "database up";
  await ask("start db");
  // "up" on a node means its pool and its LISTEN connection are both back.
  for (const admin of [adminA, adminB]) await until(async () => (await stats(admin, token)).database === "up");
  let back;
  for (;;) {
    back = await push(ann.channel, "save", { params: { title: "after the outage" } });
    if (back.status === "ok" || back.r.reason !== "unavailable") break;
    await sleep(200);
  }
  check(back.status === "ok" && back.r.record.version === 4, "save works again", back);
  step = "eve";
  const eve = await editor(wsB, topic, "eve");
  check(eve.status === "ok" && eve.reply.record.title === "after the outage", "joins work again", eve);
  ok("database back: saves and joins work again without a restart");
  // This node's LISTEN hears other programs' changes again after the outage.
  const fromList = listA.channel.seen.length;
  await ask("sql UPDATE phx_records SET record = record || '{\"body\": \"after\"}' WHERE kind = 'entity' AND id = '" + id + "'");
  const t1 = Date.now();
  while (Date.now() - t1 < 15000 && !listA.channel.seen.slice(fromList).some((m) => m.event === "updated" && m.payload.record.body === "after")) await sleep(50);
  console.log("after-restart notification " + (listA.channel.seen.slice(fromList).some((m) => m.event === "updated" && m.payload.record.body === "after") ? "seen" : "missing"));
  done();
}

({ write, read, pg })[mode](args).catch((err) => fail(err && err.stack ? err.stack : String(err)));
