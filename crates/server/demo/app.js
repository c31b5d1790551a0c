// The demo page: a live list of records per kind and a shared edit form, on the
// stock phoenix client (Socket, Channel, Presence). Wire contract:
// protocol-spec/editing.md.
import { Socket, Presence } from "/assets/phoenix.mjs";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// Who this browser is: a stable user id and a name, kept in localStorage.
const user = (() => {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem("phx-demo-user")); } catch (_) { /* fresh */ }
  if (!saved || !saved.id) {
    const n = Math.floor(Math.random() * 9000) + 1000;
    saved = { id: "u" + n + Date.now().toString(36), name: "Guest " + n };
  }
  localStorage.setItem("phx-demo-user", JSON.stringify(saved));
  return saved;
})();
$("#name").value = user.name;
$("#name").addEventListener("change", () => {
  user.name = $("#name").value.trim() || user.name;
  localStorage.setItem("phx-demo-user", JSON.stringify(user));
  if (editor) openRecord(editor.kind, editor.id); // rejoin under the new name
});

// What the server said, as it served this page, of the origin this page has:
// an address its origin check refuses can never open the socket, so say so
// here and name what works, not only in the server's log.
const origin = (() => {
  try { return JSON.parse($("#phx-origin").textContent); } catch (_) { return {}; }
})();
function showOriginNotice() {
  const notice = $("#origin-notice");
  if (origin.refused) {
    const here = origin.address || location.host;
    const ways = [];
    if (origin.works) ways.push("open " + origin.works);
    if (origin.flag) ways.push("restart phx-server with " + origin.flag);
    notice.textContent = "This address (http://" + here + ") is refused by the server's origin check, "
      + "so the page cannot connect." + (ways.length ? " To fix it, " + ways.join(", or ") + "." : "");
  } else {
    notice.textContent = "The connection to the server could not be opened. If the server's log "
      + "says the origin was refused, open the address it prints or start it with --host set to "
      + "the host in this address.";
  }
  notice.hidden = false;
}
if (origin.refused) showOriginNotice();

const socket = new Socket("/socket", { params: { user_id: user.id } });
let everOpened = false;
socket.onOpen(() => {
  everOpened = true;
  $("#origin-notice").hidden = true;
  $("#connection").textContent = "connected"; $("#connection").className = "dot up";
});
socket.onError(() => { if (!everOpened) showOriginNotice(); });
socket.onClose(() => {
  $("#connection").textContent = origin.refused ? "refused" : "offline"; $("#connection").className = "dot";
});
socket.connect();

// ---- The list of one kind, live on created / updated / deleted ----
let list = null; // { kind, channel, records: Map }

function showList(kind) {
  if (list && list.kind === kind) return;
  if (list) list.channel.leave();
  const channel = socket.channel("events:" + kind, {});
  list = { kind, channel, records: new Map() };
  const mine = list;
  document.querySelectorAll("#kinds a").forEach((a) => a.classList.toggle("active", a.dataset.kind === kind));
  channel.on("created", ({ id, record }) => { mine.records = new Map([[id, record], ...mine.records]); mine.total += 1; renderList(id); });
  channel.on("updated", ({ id, record }) => { if (mine.records.has(id)) { mine.records.set(id, record); renderList(id); } });
  channel.on("deleted", ({ id }) => { if (mine.records.delete(id)) mine.total -= 1; renderList(); });
  // The join reply is the newest page; `list` {after} gives the older ones.
  channel.join().receive("ok", ({ records, total, next }) => {
    mine.records = new Map(records.map((r) => [r.id, r]));
    mine.total = total;
    mine.next = next;
    renderList();
  });
}

$("#older").addEventListener("click", () => {
  const mine = list;
  if (!mine || !mine.next) return;
  mine.channel.push("list", { after: mine.next }).receive("ok", ({ records, total, next }) => {
    records.forEach((r) => mine.records.set(r.id, r));
    mine.total = total;
    mine.next = next;
    renderList();
  });
});

function renderList(fresh) {
  const ul = $("#records");
  ul.replaceChildren(...[...list.records.values()].map((r) => {
    const a = el("a", { href: `#/edit/${list.kind}/${r.id}` }, el("span", { textContent: r.title }), el("span", { className: "id", textContent: "#" + r.id }));
    if (editor && editor.kind === list.kind && editor.id === r.id) a.classList.add("open");
    return el("li", { className: r.id === fresh ? "fresh" : "" }, a);
  }));
  $("#list-count").textContent = `${list.records.size} of ${list.total ?? list.records.size}`;
  $("#older").hidden = !list.next;
}

$("#create").addEventListener("submit", (e) => {
  e.preventDefault();
  const title = $("#new-title").value;
  list.channel.push("create", { params: { title, body: "" } })
    .receive("ok", ({ record }) => { $("#new-title").value = ""; $("#create-error").textContent = ""; location.hash = `#/edit/${list.kind}/${record.id}`; })
    .receive("error", ({ errors }) => { $("#create-error").textContent = errors && errors.title ? "Title " + errors.title.join(", ") : "Could not create"; });
});

// ---- The edit form of one record ----
let editor = null; // { kind, id, channel, presence, role, me }

const fields = () => [$("#title"), $("#body")];
// The form's fields; `id`, `version` and `updated_by` are the server's.
const readForm = () => {
  const { id, version, updated_by, ...rest } = editor.base || {};
  return { ...rest, title: $("#title").value, body: $("#body").value };
};

// "Version n · saved by X" for the record the form started from.
function showVersion(record) {
  if (!record) return;
  const by = record.updated_by ? `saved by ${record.updated_by}` : "changed outside the editor";
  $("#version").textContent = `Version ${record.version} · ${record.version > 1 ? by : "new"}`;
}

function showConflict(stored) {
  editor.stored = stored;
  $("#conflict").hidden = !stored;
}

function fill(params) {
  if (!params) return;
  $("#title").value = params.title ?? "";
  $("#body").value = params.body ?? "";
}

function setRole(role, owner) {
  editor.role = role;
  const badge = $("#role");
  badge.textContent = role === "owner" ? "Owner — you can edit" : "Spectator — read only";
  badge.className = "badge " + role;
  fields().forEach((f) => { f.disabled = role !== "owner"; });
  $("#save").disabled = role !== "owner";
  $("#delete").disabled = role !== "owner";
  $("#owner-line").textContent = role === "owner" ? "Others see your changes as you type." : `${owner ? owner.name : "Someone"} is editing; you see their changes live.`;
}

function notice(text) {
  $("#notice").textContent = text;
  $("#notice").hidden = !text;
}

// The server's line order, the same on every node: (joined_at, node, seq).
function lineOrder(a, b) {
  return (a.joined_at - b.joined_at) || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0) || (a.seq - b.seq);
}

function renderEditors() {
  const metas = editor.presence.list((key, { metas }) => metas).flat().sort(lineOrder);
  $("#editors").replaceChildren(...metas.map((m, i) => el("li", {},
    el("span", {}, m.name, ...(editor.me && m.seq === editor.me.seq && m.node === editor.me.node ? [el("span", { className: "you", textContent: "(you)" })] : [])),
    el("span", { className: "r", textContent: i === 0 ? "owner" : "watching" }))));
  const owner = metas[0];
  if (owner && editor.role !== "owner") $("#owner-line").textContent = `${owner.name} is editing; you see their changes live.`;
}

function closeEditor(message) {
  if (editor) editor.channel.leave();
  editor = null;
  $("#editor").hidden = true;
  $("#placeholder").hidden = false;
  if (message) $("#placeholder").firstElementChild.textContent = message;
  if (list) renderList();
}

function openRecord(kind, id) {
  if (editor) editor.channel.leave();
  const channel = socket.channel(`edit:${kind}:${id}`, () => ({ user: { id: user.id, name: user.name } }));
  const presence = new Presence(channel);
  editor = { kind, id, channel, presence, role: null, me: null, base: null };
  const mine = editor;
  presence.onSync(() => { if (editor === mine) renderEditors(); });
  $("#editor").hidden = false;
  $("#placeholder").hidden = true;
  $("#editor-title").textContent = `${kind} #${id}`;
  $("#status").textContent = "";
  $("#version").textContent = "";
  $("#conflict").hidden = true;
  notice("");
  document.querySelectorAll("[data-error]").forEach((p) => { p.textContent = ""; });

  channel.on("form_change", ({ params }) => { if (editor === mine && mine.role !== "owner") fill(params); });
  channel.on("role", ({ role, owner }) => {
    if (editor !== mine) return;
    setRole(role, owner);
    notice(role === "owner"
      ? "You are now the owner: the previous owner left. You continue from their unsaved changes."
      : `${owner ? owner.name : "Someone"} opened this record first on another server: you are now a spectator.`);
  });
  channel.on("saved", ({ record }) => {
    if (editor !== mine) return;
    mine.base = record;
    showVersion(record);
    showConflict(null);
    if (mine.role !== "owner") fill(record);
    $("#status").textContent = "Saved " + new Date().toLocaleTimeString();
  });
  // Changed by another program: spectators follow it; the owner keeps the
  // unsaved form and is told (its next save is a conflict).
  channel.on("updated", ({ record }) => {
    if (editor !== mine) return;
    if (mine.role === "owner") {
      notice(`Changed outside the editor (now version ${record.version}): saving will ask you to reload or overwrite.`);
    } else {
      mine.base = record;
      showVersion(record);
      fill(record);
      notice(`Changed outside the editor: now version ${record.version}.`);
    }
  });
  channel.on("deleted", () => { if (editor === mine) closeEditor("That record was deleted."); });
  channel.join()
    .receive("ok", ({ role, owner, form, record, meta }) => {
      if (editor !== mine) return;
      mine.base = record;
      showVersion(record);
      mine.me = meta || mine.me;
      setRole(role, owner);
      fill(form || record);
      renderEditors();
    })
    .receive("error", ({ reason }) => {
      if (editor !== mine) return;
      closeEditor(reason === "not_found" ? "There is no such record." : "Cannot open: " + reason);
      location.hash = `#/list/${kind}`;
    });
  if (list) renderList();
}

fields().forEach((f) => f.addEventListener("input", () => {
  if (!editor || editor.role !== "owner") return;
  editor.channel.push("form_change", { params: readForm() });
  $("#status").textContent = "Unsaved changes";
}));

function save(version) {
  document.querySelectorAll("[data-error]").forEach((p) => { p.textContent = ""; });
  const payload = version === undefined ? { params: readForm() } : { params: readForm(), version };
  const mine = editor;
  editor.channel.push("save", payload)
    .receive("error", ({ errors, reason, record }) => {
      if (reason === "conflict") { showConflict(record); $("#status").textContent = "Not saved"; return; }
      if (reason === "unavailable") { $("#status").textContent = "Not saved: the database is unavailable, try again"; return; }
      if (errors) Object.entries(errors).forEach(([field, msgs]) => {
        const p = document.querySelector(`[data-error="${field}"]`);
        if (p) p.textContent = field + " " + msgs.join(", ");
      });
      else $("#status").textContent = "Not saved: " + reason;
    })
    .receive("ok", ({ record }) => { if (editor === mine) { mine.base = record; showVersion(record); showConflict(null); notice(""); } });
}

$("#form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (editor) save();
});

// Conflict: take the stored record, or save over it (against its version).
$("#reload").addEventListener("click", () => {
  if (!editor || !editor.stored) return;
  editor.base = editor.stored;
  fill(editor.stored);
  showVersion(editor.stored);
  editor.channel.push("form_change", { params: readForm() });
  showConflict(null);
  notice("");
});
$("#overwrite").addEventListener("click", () => {
  if (editor && editor.stored) save(editor.stored.version);
});

$("#delete").addEventListener("click", () => {
  if (editor) editor.channel.push("delete", {});
});

// ---- Routing: #/list/<kind> and #/edit/<kind>/<id> (ids may contain "/") ----
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, kind, ...rest] = hash.split("/");
  const kinds = ["entity", "data", "post"];
  const k = kinds.includes(kind) ? kind : "entity";
  showList(k);
  if (view === "edit" && rest.length) {
    const id = decodeURIComponent(rest.join("/"));
    if (!editor || editor.kind !== k || editor.id !== id) openRecord(k, id);
  } else if (editor) {
    closeEditor();
  }
}
window.addEventListener("hashchange", route);
route();
