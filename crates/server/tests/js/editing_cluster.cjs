// The collaborative-editing contract across two clustered phx-server nodes
// (crates/server/tests/editing_cluster.rs), with stock phoenix.js clients.
// Usage: node editing_cluster.cjs <ws url A> <admin url A> <ws url B> <admin url B> <token>
// Prints "ok <check>" per check and "measured <figure>" lines. Before the last
// part it prints "kill A" and waits for a line "killed" on stdin (the test
// kills node A with SIGKILL), then checks that B's spectator is promoted.
// Ends with "<n> passed, 0 failed" and exit code 0.
const { Socket } = require("phoenix");
const WebSocket = require("ws");
const readline = require("readline");
const { isDeepStrictEqual: same } = require("node:util");

const [wsA, adminA, wsB, adminB, token] = process.argv.slice(2);
let passed = 0;
let step = "start";
const fail = (why) => { console.log("error " + why); process.exit(1); };
const ok = (what) => { passed += 1; console.log("ok " + what); };
const check = (cond, what, detail) => { if (!cond) fail(what + (detail === undefined ? "" : ": " + JSON.stringify(detail))); };
setTimeout(() => fail("timed out after " + passed + " checks, at: " + step), 90000).unref();

function connect(url) {
  const socket = new Socket(url, { transport: WebSocket, reconnectAfterMs: () => 50, rejoinAfterMs: () => 50 });
  socket.connect();
  return socket;
}

const { join, push, next, count, sleep } = require("./editing_helpers.cjs")(fail, 5000);
const editor = (url, topic, id) => join(connect(url), topic, { user: { id, name: id.toUpperCase() } });

// Waits until node `admin` counts `n` presences on `topic` (presence has crossed).
async function presences(admin, topic, n) {
  for (;;) {
    const res = await fetch(admin + "/api/stats", { headers: { authorization: "Bearer " + token } });
    const stats = await res.json();
    if ((stats.presences_by_topic[topic] || 0) === n) return;
    await sleep(20);
  }
}

const order = (m) => [m.joined_at, m.node, m.seq];
const before = (x, y) => { const [a, b] = [order(x), order(y)]; return a[0] < b[0] || (a[0] === b[0] && (a[1] < b[1] || (a[1] === b[1] && a[2] < b[2]))); };

(async () => {
  const lines = readline.createInterface({ input: process.stdin });
  const stdin = [];
  lines.on("line", (l) => stdin.push(l));

  // ---- roles across nodes; a node with no session gets the unsaved form from the owner's node ----
  step = "roles";
  const topic = "edit:entity:1";
  const ann = await editor(wsA, topic, "ann");
  check(ann.status === "ok" && ann.reply.role === "owner", "ann on A owns", ann);
  const draft = { title: "Acme (draft on A)" };
  check((await push(ann.channel, "form_change", { params: draft })).status === "ok", "ann types");
  await presences(adminB, topic, 1);
  const bob = await editor(wsB, topic, "bob");
  check(bob.reply.role === "spectator" && bob.reply.owner.key === "ann", "bob on B is a spectator of ann", bob.reply);
  check(same(bob.reply.form, draft), "B had no session: bob's join reply carries A's unsaved form", bob.reply);
  ok("owner on A, spectator on B; a node with no session gets the unsaved form from the owner's node");

  step = "form_change across";
  const draft2 = { title: "Acme (draft 2)", body: "typing on A" };
  check((await push(ann.channel, "form_change", { params: draft2 })).status === "ok", "ann types again");
  const seenByBob = await next(bob.channel, "form_change");
  check(same(seenByBob.params, draft2) && seenByBob.by === "ann", "bob sees ann's change with by", seenByBob);
  for (const [event, payload] of [["form_change", { params: { title: "hijack" } }], ["save", { params: { title: "hijack" } }], ["delete", {}]]) {
    const r = await push(bob.channel, event, payload);
    check(r.status === "error" && r.r.reason === "not_owner", "spectator on B: " + event + " refused", r);
  }
  ok("the owner's form_change reaches B's editors; B's spectator is refused not_owner");

  step = "late joiners";
  await presences(adminA, topic, 2);
  const al = await editor(wsA, topic, "al");
  await presences(adminB, topic, 3);
  const cy = await editor(wsB, topic, "cy");
  check(al.reply.role === "spectator" && cy.reply.role === "spectator", "late joiners are spectators", [al.reply, cy.reply]);
  check(same(cy.reply.form, draft2) && same(al.reply.form, draft2), "late joiners on both nodes get the unsaved form", [al.reply.form, cy.reply.form]);
  check(cy.reply.owner.key === "ann" && al.reply.owner.key === "ann", "everyone names ann", [al.reply.owner, cy.reply.owner]);
  ok("late joiners on A and on B get the unsaved form and name the same owner");

  // ---- promotion across nodes: next in line is bob (on B), and only he is told ----
  step = "promotion";
  await presences(adminA, topic, 4);
  await presences(adminB, topic, 4);
  const t0 = Date.now();
  ann.channel.socket.disconnect();
  const role = await next(bob.channel, "role");
  console.log("measured cross_node_promotion_ms " + (Date.now() - t0));
  check(role.role === "owner" && role.owner.key === "bob", "bob is told he owns", role);
  const cont = { ...draft2, body: "bob continues on B" };
  const alFrom = al.channel.seen.length;
  check((await push(bob.channel, "form_change", { params: cont })).status === "ok", "bob edits");
  const alSees = await next(al.channel, "form_change", alFrom);
  check(same(alSees.params, cont) && alSees.by === "bob", "A's spectator sees the new owner's change", alSees);
  await sleep(200);
  check(count(al.channel, "role") === 0 && count(cy.channel, "role") === 0, "nobody else is told they own", [al.channel.seen, cy.channel.seen]);
  const dee = await editor(wsA, topic, "dee");
  check(dee.reply.owner.key === "bob" && same(dee.reply.form, cont), "a joiner on A names bob and sees his form", dee.reply);
  ok("owner's socket closes: the next in line on the other node is promoted, nobody else; the form carries on");

  // ---- save on B, seen on A ----
  step = "save";
  const watchA = await join(connect(wsA), "events:entity", {});
  const saved = await push(bob.channel, "save", { params: { title: "Acme Inc.", body: "saved on B" } });
  check(saved.status === "ok" && saved.r.record.title === "Acme Inc.", "save on B", saved);
  const savedOnA = await next(al.channel, "saved");
  check(savedOnA.record.title === "Acme Inc.", "A's editor sees saved", savedOnA);
  const upd = await next(watchA.channel, "updated");
  check(upd.id === "1" && upd.record.title === "Acme Inc.", "A's events list sees updated", upd);
  const eve = await editor(wsA, topic, "eve");
  check(eve.reply.record.title === "Acme Inc." && eve.reply.form === null, "A's store has the saved record; form null", eve.reply);
  ok("save on B: saved on A's editors, updated on A's events:entity, A loads the saved record");

  // ---- create on A appears on B ----
  step = "create";
  const watchB = await join(connect(wsB), "events:entity", {});
  const creator = await join(connect(wsA), "events:entity", {});
  const created = await push(creator.channel, "create", { params: { title: "Initech" } });
  check(created.status === "ok", "create on A", created);
  const id = created.r.record.id;
  const createdOnB = await next(watchB.channel, "created");
  check(createdOnB.id === id && createdOnB.record.title === "Initech", "B's events list sees created", createdOnB);
  const listB = await join(connect(wsB), "events:entity", {});
  check(listB.reply.records.some((r) => r.id === id), "B lists the new record", listB.reply);
  const other = await push(watchB.channel, "create", { params: { title: "Umbrella" } });
  check(other.status === "ok" && other.r.record.id !== id, "ids are unique across nodes", [id, other.r.record.id]);
  ok("create on A: created on B's events:entity, listed and loadable on B; ids unique across nodes (" + id + ", " + other.r.record.id + ")");

  // ---- delete closes editors on both nodes ----
  step = "delete";
  const t = "edit:entity:" + id;
  const pat = await editor(wsA, t, "pat");
  check(pat.reply.role === "owner", "pat owns the new record", pat.reply);
  await presences(adminB, t, 1);
  const quinn = await editor(wsB, t, "quinn");
  check(quinn.status === "ok" && quinn.reply.role === "spectator", "quinn on B (record loaded from B's store)", quinn);
  await presences(adminA, t, 2);
  const del = await push(pat.channel, "delete", {});
  check(del.status === "ok", "delete", del);
  const gone = await next(quinn.channel, "deleted");
  check(gone.id === id, "B's editor sees deleted", gone);
  await quinn.channel.closed;
  await pat.channel.closed;
  const events = quinn.channel.seen.map((m) => m.event);
  check(events.indexOf("deleted") >= 0 && events.indexOf("phx_close") > events.indexOf("deleted"), "deleted before phx_close", events);
  check(count(quinn.channel, "role") === 0, "nobody promoted on a deleted record", events);
  const delB = await next(watchB.channel, "deleted");
  check(delB.id === id, "B's events list sees deleted", delB);
  for (const url of [wsA, wsB]) {
    const again = await editor(url, t, "zoe");
    check(again.status === "error" && again.reply.reason === "not_found", "a later join is not_found on " + url, again);
  }
  ok("delete on A: editors on both nodes get deleted then phx_close; later joins anywhere are not_found");

  // ---- near-simultaneous joins on two nodes: one owner once presence has crossed ----
  step = "ties";
  const tieTopic = "edit:entity:2";
  const [r1, r2] = await Promise.all([editor(wsA, tieTopic, "r1"), editor(wsB, tieTopic, "r2")]);
  await presences(adminA, tieTopic, 2);
  await presences(adminB, tieTopic, 2);
  await sleep(300);
  const roleOf = (r) => { const pushed = r.channel.seen.filter((m) => m.event === "role"); return pushed.length ? pushed[pushed.length - 1].payload.role : r.reply.role; };
  const roles = [roleOf(r1), roleOf(r2)];
  check(roles.filter((x) => x === "owner").length === 1, "exactly one owner", roles);
  const first = before(r1.reply.meta, r2.reply.meta) ? "r1" : "r2";
  check((first === "r1" ? roles[0] : roles[1]) === "owner", "the owner is first by (joined_at, node, seq)", [r1.reply.meta, r2.reply.meta, roles]);
  const sameMs = r1.reply.meta.joined_at === r2.reply.meta.joined_at;
  const bothOwned = r1.reply.role === "owner" && r2.reply.role === "owner";
  ok("two joins on two nodes at once: one owner, first by (joined_at, node, seq)" + (sameMs ? " (same ms)" : "") + (bothOwned ? " (both answered owner; the later one was told spectator)" : ""));

  // ---- the owner's node dies: B's editor is promoted within the down period ----
  step = "kill";
  const kim = await editor(wsA, "edit:data:1", "kim");
  check(kim.reply.role === "owner", "kim on A owns data 1", kim.reply);
  check((await push(kim.channel, "form_change", { params: { title: "kim's draft" } })).status === "ok", "kim types");
  await presences(adminB, "edit:data:1", 1);
  const lee = await editor(wsB, "edit:data:1", "lee");
  check(lee.reply.role === "spectator" && same(lee.reply.form, { title: "kim's draft" }), "lee on B is a spectator with kim's form", lee.reply);
  console.log("kill A");
  while (!stdin.includes("killed")) await sleep(10);
  const killedAt = Date.now();
  const promoted = await next(lee.channel, "role");
  console.log("measured promotion_after_kill_ms " + (Date.now() - killedAt));
  check(promoted.role === "owner" && promoted.owner.key === "lee", "lee is promoted", promoted);
  check((await push(lee.channel, "save", { params: { title: "saved by lee" } })).status === "ok", "lee saves");
  ok("SIGKILL of the owner's node: B's spectator is promoted within the down period and can save");

  console.log(passed + " passed, 0 failed");
  process.exit(0);
})().catch((err) => fail(err && err.stack ? err.stack.replace(/\n/g, " | ") : String(err)));
