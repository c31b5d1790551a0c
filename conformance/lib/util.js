// Small helpers shared by every case.
"use strict";

let counter = 0;
/** A name no other case (or earlier run) uses, e.g. uniq("room:") -> "room:c1234-lq3x-7". */
function uniq(prefix = "") {
  counter += 1;
  return `${prefix}c${process.pid}-${Date.now().toString(36)}-${counter}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with pred()'s first truthy value; rejects after ms. */
function until(pred, ms = 3000, what = "condition") {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      let v;
      try { v = pred(); } catch (_) { v = false; }
      if (v) return resolve(v);
      if (Date.now() - start > ms) return reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

/** Rejects if `promise` does not settle within ms. */
function within(promise, ms, what = "result") {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** A fresh plain copy of a JSON value (strips null prototypes, for deepEqual). */
const plain = (v) => (v === undefined ? v : JSON.parse(JSON.stringify(v)));

/** Case options: a timeout for every case. */
const T = (ms = 15000) => ({ timeout: ms });

module.exports = { uniq, sleep, until, within, plain, T };
