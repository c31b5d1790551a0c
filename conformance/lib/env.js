// Loads the two stock client generations so that they run in Node unchanged.
//
// What phoenix.js expects from a browser, and what we give it:
// - WebSocket: neither generation needs a global one when `transport` is passed;
//   stock() always passes the `ws` class (phoenix.js only picks
//   `global.WebSocket || LongPoll` when no transport is given).
// - The 1.8 bundle finds its globals through `self || window || globalThis`; in Node
//   that is globalThis, whose fetch + AbortController its Ajax helper uses for
//   long-poll. We deliberately leave `window` undefined, so no page-lifecycle
//   listeners (pagehide, visibilitychange) are installed, and `sessionStorage`
//   undefined (phoenix.js guards every use; the fallback case passes its own store).
// - The 1.7 bundle looks its globals up through `self || window` only (its last
//   resort is a hoisted, undefined variable), and its Ajax helper needs
//   XMLHttpRequest. So it is loaded while `self` points to a small object holding
//   our XMLHttpRequest; the bundle keeps that object, and `self` is removed again.
"use strict";
const { NodeXMLHttpRequest } = require("./xhr");

const phoenix18 = require("phoenix");

const hadSelf = Object.prototype.hasOwnProperty.call(globalThis, "self");
const previousSelf = globalThis.self;
globalThis.self = {
  XMLHttpRequest: NodeXMLHttpRequest,
  setTimeout, clearTimeout, console,
};
let phoenix17;
try {
  phoenix17 = require("phoenix17");
} finally {
  if (hadSelf) globalThis.self = previousSelf; else delete globalThis.self;
}

const clients = { "1.8": phoenix18, "1.7": phoenix17 };

/** The exact package versions in use, e.g. {"1.8": "1.8.16", "1.7": "1.7.23"}. */
const versions = {
  "1.8": packageVersion("phoenix"),
  "1.7": packageVersion("phoenix17"),
};

function packageVersion(name) {
  // package.json is not in phoenix's "exports"; read it from the install directory.
  const path = require("node:path");
  const fs = require("node:fs");
  const dir = path.join(__dirname, "..", "node_modules", name, "package.json");
  return JSON.parse(fs.readFileSync(dir, "utf8")).version;
}

module.exports = { clients, versions };
