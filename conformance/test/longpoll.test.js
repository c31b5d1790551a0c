// Long-poll, raw HTTP. Skipped, with the reason printed, when the server does not
// serve the transport (HTTP 404 on <mount>/longpoll).
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const { httpBase } = require("../lib/harness");

function get(path) {
  return new Promise((resolve, reject) => {
    http.get(httpBase() + path, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
    }).on("error", reject);
  });
}

test("[C52][D81] long-poll: first GET creates a session (body status 410 + token)", { timeout: 5000 }, async (t) => {
  const res = await get("/longpoll?vsn=2.0.0");
  if (res.status === 404) {
    t.skip("the server does not serve long-poll at <mount>/longpoll (HTTP 404)");
    return;
  }
  assert.equal(res.status, 200);
  const body = JSON.parse(res.body);
  assert.equal(body.status, 410);
  assert.equal(typeof body.token, "string");
  assert.match(res.headers["content-type"], /application\/json/);
});
