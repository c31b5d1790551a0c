// Where the server under test lives and what it is configured with, from the
// environment that run.sh sets up.
"use strict";

/**
 * PHX_URL is the socket's mount URL, e.g. ws://127.0.0.1:4000/socket.
 * http(s):// is accepted too and means the same mount.
 */
function mountUrl() {
  let url = (process.env.PHX_URL || "ws://127.0.0.1:4000/socket").trim().replace(/\/+$/, "");
  url = url.replace(/^http:/, "ws:").replace(/^https:/, "wss:");
  // Tolerate a transport path given by mistake.
  url = url.replace(/\/(websocket|longpoll)$/, "");
  const parsed = new URL(url);
  if (parsed.pathname === "/" || parsed.pathname === "") url += "/socket";
  return url;
}

function serverGen() {
  const gen = process.env.PHX_SERVER_GEN || "1.8";
  if (gen !== "1.7" && gen !== "1.8") throw new Error(`PHX_SERVER_GEN must be 1.7 or 1.8, not ${gen}`);
  return gen;
}

const WS_MOUNT = mountUrl();
const HTTP_MOUNT = WS_MOUNT.replace(/^ws/, "http");

module.exports = {
  /** ws://host:port/socket */
  WS_MOUNT,
  /** http://host:port/socket */
  HTTP_MOUNT,
  /** The server's long-poll window (how long an idle GET waits), in ms. */
  LP_WINDOW_MS: Number(process.env.LP_WINDOW_MS || 10000),
  /**
   * Which Phoenix generation's server behaviour to expect (run.sh --phoenix): "1.8"
   * (default; what phx-server implements) or "1.7". Cases marked for the other
   * generation only are skipped (lib/case.js).
   */
  SERVER_GEN: serverGen(),
  /** Client generations every applicable case runs with. */
  CLIENT_GENS: ["1.8", "1.7"],
};
