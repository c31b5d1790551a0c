// A small XMLHttpRequest for Node, enough for phoenix.js's Ajax helper (the 1.7
// LongPoll transport has no fetch path). It speaks plain http/https through Node's
// own modules and implements only what that helper touches: open, setRequestHeader,
// send, abort, timeout, readyState, status, responseText, onreadystatechange,
// onerror and ontimeout.
//
// Deliberate simplifications: abort() is silent (no events, so a transport that
// aborts its requests while closing does not see them fail), a timeout fires only
// ontimeout, and a network error fires only onerror.
"use strict";
const http = require("node:http");
const https = require("node:https");

const UNSENT = 0, OPENED = 1, HEADERS_RECEIVED = 2, LOADING = 3, DONE = 4;

class NodeXMLHttpRequest {
  constructor() {
    this.readyState = UNSENT;
    this.status = 0;
    this.responseText = "";
    this.timeout = 0;
    this.onreadystatechange = null;
    this.onerror = null;
    this.ontimeout = null;
    this.onload = null;
    this._headers = {};
    this._req = null;
    this._timer = null;
    this._finished = false;
  }

  open(method, url) {
    this._method = method;
    this._url = new URL(url);
    this._setState(OPENED);
  }

  setRequestHeader(name, value) {
    this._headers[name] = value;
  }

  send(body) {
    const mod = this._url.protocol === "https:" ? https : http;
    const headers = { ...this._headers };
    if (body !== null && body !== undefined) headers["Content-Length"] = Buffer.byteLength(body);
    const req = mod.request(this._url, { method: this._method, headers }, (res) => {
      this.status = res.statusCode;
      this._setState(HEADERS_RECEIVED);
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        this.responseText += chunk;
        if (this.readyState !== LOADING) this._setState(LOADING);
      });
      res.on("end", () => this._finish(() => {
        this._setState(DONE);
        if (this.onload) this.onload();
      }));
      res.on("error", (e) => this._fail(e));
    });
    req.on("error", (e) => this._fail(e));
    this._req = req;
    if (this.timeout > 0) {
      this._timer = setTimeout(() => this._finish(() => {
        req.destroy();
        this.readyState = DONE;
        if (this.ontimeout) this.ontimeout();
      }), this.timeout);
    }
    if (body !== null && body !== undefined) req.write(body);
    req.end();
  }

  abort() {
    this._finish(() => {
      if (this._req) this._req.destroy();
      this.readyState = UNSENT;
    });
  }

  _fail(err) {
    this._finish(() => {
      this.readyState = DONE;
      this.status = 0;
      if (this.onerror) this.onerror(err);
    });
  }

  /** Runs `fn` once: whichever of end, error, timeout or abort comes first. */
  _finish(fn) {
    if (this._finished) return;
    this._finished = true;
    clearTimeout(this._timer);
    fn();
  }

  _setState(state) {
    this.readyState = state;
    if (this.onreadystatechange) this.onreadystatechange();
  }
}

Object.assign(NodeXMLHttpRequest, { UNSENT, OPENED, HEADERS_RECEIVED, LOADING, DONE });

module.exports = { NodeXMLHttpRequest };
