// node:test's test(), with two things in front of every case.
//
// - The Phoenix generation(s) whose server behaviour the case asserts: `phoenix:
//   ["1.8"]` (with `why`, the 1.7 difference) or, by default, both 1.7 and 1.8. The
//   title starts with that mark ("{1.7 1.8}" or "{1.8}"), and a case whose generations
//   do not include the target (`run.sh --phoenix`) is skipped with its reason printed.
// - A reachability check: the server must accept TCP connections. When it does not
//   (nothing listening, wrong URL), every case fails at once with that reason instead
//   of waiting out its own timeouts.
"use strict";
const net = require("node:net");
const nodeTest = require("node:test");
const { WS_MOUNT, SERVER_GEN } = require("./config");

const GENERATIONS = ["1.7", "1.8"];

let reachable = null;
function ensureServer() {
  if (!reachable) {
    const url = new URL(WS_MOUNT);
    const port = Number(url.port || (url.protocol === "wss:" ? 443 : 80));
    const host = url.hostname;
    reachable = new Promise((resolve, reject) => {
      const s = net.connect(port, host);
      s.setTimeout(2000, () => { s.destroy(); reject(new Error(`server not reachable at ${host}:${port}: no answer within 2 s`)); });
      s.once("connect", () => { s.destroy(); resolve(); });
      s.once("error", (e) => reject(new Error(`server not reachable at ${host}:${port}: ${e.code || e.message}`)));
    });
  }
  return reachable;
}

/**
 * test(title, [opts], fn). opts: node:test's options plus `phoenix` (the server
 * generations whose behaviour the case asserts; default both) and `why` (required when
 * a generation is left out: what that generation does instead).
 */
function test(name, opts, fn) {
  if (typeof opts === "function") { fn = opts; opts = {}; }
  const { phoenix = GENERATIONS, why, ...rest } = opts;
  for (const g of phoenix) if (!GENERATIONS.includes(g)) throw new Error(`${name}: unknown Phoenix generation ${g}`);
  if (phoenix.length < GENERATIONS.length && !why) throw new Error(`${name}: a generation-specific case must say why`);
  const title = `{${phoenix.join(" ")}} ${name}`;
  if (!phoenix.includes(SERVER_GEN)) {
    return nodeTest(title, { ...rest, skip: `asserts Phoenix ${phoenix.join("/")} behaviour, not ${SERVER_GEN}: ${why}` }, () => {});
  }
  return nodeTest(title, rest, async (t) => {
    await ensureServer();
    return fn(t);
  });
}

// A case file must end when its cases have ended. If something would keep this process
// alive (a socket a library keeps retrying, a request still in flight, the timeout of a
// push that gets no reply by design, e.g. `crash` or `stop`), the runner would wait for
// it; instead, exit a few seconds after the last case, naming what was still open
// unless it was only timers.
nodeTest.after(() => {
  setTimeout(() => {
    const open = process.getActiveResourcesInfo().filter((r) => !["Timeout", "PipeWrap", "TTYWrap"].includes(r));
    if (open.length) process.stderr.write(`${process.argv[1]}: still open 3 s after the last case (${open.join(", ")}); exiting\n`);
    process.exit();
  }, 3000).unref();
});

/** Options for a case that asserts Phoenix 1.8 behaviour only; `why` says what 1.7 does. */
const only18 = (why, opts = {}) => ({ ...opts, phoenix: ["1.8"], why });

module.exports = test;
module.exports.test = test;
module.exports.only18 = only18;
module.exports.ensureServer = ensureServer;
module.exports.GENERATIONS = GENERATIONS;
