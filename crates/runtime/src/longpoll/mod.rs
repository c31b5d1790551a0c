//! The long-poll transport at `<mount>/longpoll`, as phoenix.js's `LongPoll` uses it
//! (`phoenix/lib/phoenix/transports/long_poll.ex`, `long_poll_server.ex`, v1.8.12).
//!
//! - Every answer is HTTP 200 with a JSON body whose `status` is the protocol
//!   status, `content-type: application/json; charset=utf-8`,
//!   `cache-control: no-store` and `access-control-allow-origin: *`. OPTIONS is a
//!   CORS preflight; any other method gets a real 400.
//! - A GET without a live session creates one (after check_origin, vsn and the
//!   socket handler: any refusal is `{"status":403}`) and answers
//!   `{"status":410,"token":…,"messages":[]}`. A GET with a live session answers at
//!   once with the waiting messages (`200`, each a JSON string holding one frame),
//!   or after the window (10 s by default) with `204`.
//! - A POST carries frames: `application/x-ndjson` bodies are split into lines (the
//!   first 100 count; `[`-lines are JSON, other lines base64 binary frames), any other
//!   body is one frame. `{"status":200}` once they are handled; `{"status":408}` when
//!   the session's channels did not take them within one window (flow control;
//!   the client reconnects); `{"status":410}` without a live session; a malformed
//!   frame ends the session and answers `{"status":400}`.
//! - The token rides in `?token=` or the `x-phoenix-longpoll-token` header (which
//!   wins). It is the session id signed with HMAC-SHA256 and the endpoint secret, so
//!   it cannot be guessed or forged.
//! - A session with no poll for 1.5 windows ends, like a closed WebSocket: its
//!   channels stop and its presences leave. So does a session whose client lets more
//!   than `outbound_queue` frames, or more than `socket_buffer_bytes` bytes, wait
//!   for a poll (a slow client, counted), a socket-id `disconnect`, and a drain.
//!
//! - Across a cluster (as Phoenix routes them over PubSub): every session
//!   listens on the PubSub topic `phx:lp:<session id>`. A request whose session
//!   lives on another node (its token is valid, the session is not here) is
//!   relayed there: the node publishes the poll or the POST's body on that topic
//!   with a private reply topic, the session's node acknowledges at once and
//!   answers when the local path would. No acknowledgement within 2 s means the
//!   session is gone everywhere: a GET opens a new one, a POST gets 410. Every
//!   node must sign with the same secret (`Config::secret`).
//!
//! The parts: [`token`] signs and verifies session tokens, [`http`] answers
//! the requests, [`session`] is one session (the wire the socket loop drives,
//! and the registry of live sessions), [`relay`] carries requests to the node
//! holding their session. One task per session runs the socket loop
//! (`transport::drive`) over the session's wire: it owns the socket and the
//! frames waiting for a poll.
//! Server-to-client binary frames cannot travel over long-poll (as in Phoenix):
//! they are dropped with a warning.

mod http;
mod relay;
mod session;
mod token;

pub(crate) use http::route;
pub(crate) use session::Sessions;
