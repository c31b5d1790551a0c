//! `phx-bench floor`: the machine's floor for each scenario — a minimal server made
//! only of what any WebSocket server on this stack must do: tokio, TCP, tungstenite
//! for the handshake and for reading frames (the crate `phx-server` uses), one task
//! and one bounded queue per connection, and frames written pre-encoded, several
//! queued frames in one write. There are no channels, no PubSub, no presence
//! tracker and no JSON: a client frame is only split into its five V2 fields (no
//! escapes), and every reply is a fixed template with the client's refs and topic
//! copied in.
//!
//! It serves the same deliveries to the same clients as `phx-server --conformance`,
//! so that the generator's checks pass unchanged against it:
//!
//! - a join: the reply (`{"status":"ok","response":{"topic":…}}`); in a `room:`
//!   topic also a `presence_state` with every member's entry (pre-encoded at its
//!   join) to the joiner and a one-member `presence_diff` to every member;
//! - `shout`: the reply, and one frame written to every subscriber of the topic;
//! - `echo`: the reply carrying the payload back; `heartbeat`, `phx_leave`: the reply;
//! - a leave or a closed connection in a `room:` topic: a `presence_diff` with the
//!   member's leave to every remaining member.
//!
//! It prints a banner like `phx-server`'s, and answers `GET /metrics` on a second
//! listener with the counters the generator reads (`phx_channels_open`,
//! `phx_sockets_open`, `phx_slow_clients_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The `floor` command's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Address for WebSocket clients (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// Address of the `/metrics` listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_bind: String,
}

/// Frames one connection may have queued (as `phx-server`'s socket mailbox).
const QUEUE: usize = 1024;
/// A write gathers queued frames up to this many bytes (as `phx-server`'s outbox).
const BATCH: usize = 32 * 1024;
/// Largest client frame read (as `phx-server`'s default).
const MAX_FRAME: usize = 10_000_000;

/// One subscriber of a topic.
struct Member {
    conn: u64,
    tx: mpsc::Sender<Bytes>,
    /// In a presence room: the member's pre-encoded `"key":{"metas":[…]}` entry.
    entry: Option<Bytes>,
}

/// Every topic's subscribers, and the counters `/metrics` shows.
#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<String, Vec<Member>>>,
    sockets: AtomicU64,
    channels: AtomicU64,
    slow: AtomicU64,
    next_ref: AtomicU64,
}

impl Hub {
    fn topics(&self) -> MutexGuard<'_, HashMap<String, Vec<Member>>> {
        // A panic while holding the lock leaves the map as it was between two
        // whole operations: keep serving.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` for every member of a topic (given its list, lock held).
    fn send_all(&self, members: &[Member], frame: &Bytes) {
        for m in members {
            if m.tx.try_send(frame.clone()).is_err() {
                self.slow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the floor server until the process is stopped.
pub async fn serve(a: &FloorArgs) -> Result<(), String> {
    let listener = listen(&a.bind).map_err(|e| format!("bind {}: {e}", a.bind))?;
    let admin = TcpListener::bind(&a.admin_bind)
        .await
        .map_err(|e| format!("bind {}: {e}", a.admin_bind))?;
    let (addr, admin_addr) = (
        listener.local_addr().map_err(|e| e.to_string())?,
        admin.local_addr().map_err(|e| e.to_string())?,
    );
    let hub = Arc::new(Hub::default());
    println!("phx-bench floor listening on http://{addr}");
    println!("phx-bench floor admin on http://{admin_addr} (/metrics)");
    let metrics_hub = hub.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = admin.accept().await {
            tokio::spawn(metrics(stream, metrics_hub.clone()));
        }
    });
    let mut conn = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        conn += 1;
        tokio::spawn(connection(stream, conn, hub.clone()));
    }
}

/// The listen backlog phx-server asks for (tokio's `bind` asks for 1 024, which
/// a join storm overflows: each dropped connect costs its client a second).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the clients' listener as phx-server does: `SO_REUSEADDR` and a backlog of
/// [`LISTEN_BACKLOG`].
fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Answers one `GET /metrics` with the counters, then closes.
async fn metrics(mut stream: TcpStream, hub: Arc<Hub>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!(
        "phx_channels_open {}\nphx_sockets_open {}\nphx_slow_clients_total {}\n",
        hub.channels.load(Ordering::Relaxed),
        hub.sockets.load(Ordering::Relaxed),
        hub.slow.load(Ordering::Relaxed),
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

/// The five fields of a V2 frame: `[join_ref, ref, topic, event, payload]`, the
/// first two as raw JSON (`null` or a string), topic and event unquoted.
#[derive(Debug, PartialEq)]
struct Fields<'a> {
    join_ref: &'a str,
    reference: &'a str,
    topic: &'a str,
    event: &'a str,
    payload: &'a str,
}

/// Splits a V2 frame without parsing JSON. Strings must hold no escapes (the
/// generator sends none); anything else is refused.
fn split(text: &str) -> Option<Fields<'_>> {
    let rest = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    // One field: `null` or a string without escapes, then a comma.
    fn field(rest: &str) -> Option<(&str, &str)> {
        let rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("null") {
            return Some(("null", after.trim_start().strip_prefix(',')?));
        }
        let inner = rest.strip_prefix('"')?;
        let end = inner.find('"')?;
        if inner[..end].contains('\\') {
            return None;
        }
        let raw = &rest[..end + 2];
        Some((raw, inner[end + 1..].trim_start().strip_prefix(',')?))
    }
    let (join_ref, rest) = field(rest)?;
    let (reference, rest) = field(rest)?;
    let (topic, rest) = field(rest)?;
    let (event, payload) = field(rest)?;
    Some(Fields {
        join_ref,
        reference,
        topic: topic.strip_prefix('"')?.strip_suffix('"')?,
        event: event.strip_prefix('"')?.strip_suffix('"')?,
        payload: payload.trim(),
    })
}

/// A server-to-client WebSocket text frame (unmasked), header and payload.
fn ws_text(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut frame = BytesMut::with_capacity(len + 10);
    frame.put_u8(0x81);
    if len < 126 {
        frame.put_u8(len as u8);
    } else if len <= usize::from(u16::MAX) {
        frame.put_u8(126);
        frame.put_u16(len as u16);
    } else {
        frame.put_u8(127);
        frame.put_u64(len as u64);
    }
    frame.put_slice(payload);
    frame.freeze()
}

/// A V2 message as a WebSocket frame; refs are raw JSON, topic and event unquoted.
fn message(join_ref: &str, reference: &str, topic: &str, event: &str, payload: &str) -> Bytes {
    ws_text(format!(r#"[{join_ref},{reference},"{topic}","{event}",{payload}]"#).as_bytes())
}

/// The presence entry a member of a `room:` topic gets: its key and one meta with
/// `online_at` and a `phx_ref`, as `phx-server`'s conformance app tracks it.
fn presence_entry(hub: &Hub, payload: &str) -> Bytes {
    let key = payload
        .split_once(r#""user":""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("anon", |(user, _)| user);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = hub.next_ref.fetch_add(1, Ordering::Relaxed);
    Bytes::from(format!(
        r#""{key}":{{"metas":[{{"online_at":{now},"phx_ref":"F{n:019}"}}]}}"#
    ))
}

/// One WebSocket connection: reads client frames and answers them in place, and
/// writes what other connections queued for it, every queued frame in one write.
async fn connection(stream: TcpStream, conn: u64, hub: Arc<Hub>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    hub.sockets.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    // Topics this connection joined, with its presence entry in a `room:` topic.
    let mut joined: Vec<(String, Option<Bytes>)> = Vec::new();
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(f) = split(text.as_str()) {
                        answer(&hub, conn, &tx, &mut joined, &mut out, &f);
                    }
                }
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            Some(frame) = rx.recv() => {
                out.extend_from_slice(&frame);
                while out.len() < BATCH {
                    let Ok(frame) = rx.try_recv() else { break };
                    out.extend_from_slice(&frame);
                }
            }
        }
        // Whatever tungstenite owes the client (pongs) first, then our frames.
        if futures::SinkExt::flush(&mut ws).await.is_err() {
            break;
        }
        if !out.is_empty() {
            if ws.get_mut().write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            if out.capacity() > 4096 {
                out = BytesMut::new();
            }
        }
    }
    let _ = futures::SinkExt::close(&mut ws).await;
    for (topic, entry) in joined {
        leave(&hub, conn, &topic, entry.as_ref());
    }
    hub.sockets.fetch_sub(1, Ordering::Relaxed);
}

/// Answers one client frame: its reply goes straight into `out`, frames for other
/// connections into their queues.
fn answer(
    hub: &Hub,
    conn: u64,
    tx: &mpsc::Sender<Bytes>,
    joined: &mut Vec<(String, Option<Bytes>)>,
    out: &mut BytesMut,
    f: &Fields<'_>,
) {
    let reply = |out: &mut BytesMut, response: &str| {
        let payload = format!(r#"{{"status":"ok","response":{response}}}"#);
        out.extend_from_slice(&message(
            f.join_ref,
            f.reference,
            f.topic,
            "phx_reply",
            &payload,
        ));
    };
    match f.event {
        "phx_join" => {
            reply(out, &format!(r#"{{"topic":"{}"}}"#, f.topic));
            if joined.iter().any(|(t, _)| t == f.topic) {
                return;
            }
            let entry = f
                .topic
                .starts_with("room:")
                .then(|| presence_entry(hub, f.payload));
            let mut topics = hub.topics();
            let members = topics.entry(f.topic.to_owned()).or_default();
            members.push(Member {
                conn,
                tx: tx.clone(),
                entry: entry.clone(),
            });
            hub.channels.fetch_add(1, Ordering::Relaxed);
            if let Some(entry) = &entry {
                // presence_state to the joiner: every member's entry.
                let mut state = Vec::with_capacity(members.len() * (entry.len() + 1) + 2);
                state.push(b'{');
                for (i, e) in members.iter().filter_map(|m| m.entry.as_ref()).enumerate() {
                    if i > 0 {
                        state.push(b',');
                    }
                    state.extend_from_slice(e);
                }
                state.push(b'}');
                let state = String::from_utf8_lossy(&state);
                out.extend_from_slice(&message(
                    f.join_ref,
                    "null",
                    f.topic,
                    "presence_state",
                    &state,
                ));
                let diff = format!(
                    r#"{{"joins":{{{}}},"leaves":{{}}}}"#,
                    String::from_utf8_lossy(entry)
                );
                hub.send_all(
                    members,
                    &message("null", "null", f.topic, "presence_diff", &diff),
                );
            }
            joined.push((f.topic.to_owned(), entry));
        }
        "shout" => {
            reply(out, "{}");
            let frame = message("null", "null", f.topic, "shout", f.payload);
            if let Some(members) = hub.topics().get(f.topic) {
                hub.send_all(members, &frame);
            }
        }
        "echo" => reply(out, f.payload),
        "phx_leave" => {
            reply(out, "{}");
            if let Some(i) = joined.iter().position(|(t, _)| t == f.topic) {
                let (topic, entry) = joined.swap_remove(i);
                leave(hub, conn, &topic, entry.as_ref());
            }
        }
        _ => reply(out, "{}"),
    }
}

/// Takes a connection out of a topic; in a presence room, the others get its leave.
fn leave(hub: &Hub, conn: u64, topic: &str, entry: Option<&Bytes>) {
    let mut topics = hub.topics();
    let Some(members) = topics.get_mut(topic) else {
        return;
    };
    members.retain(|m| m.conn != conn);
    hub.channels.fetch_sub(1, Ordering::Relaxed);
    if let Some(entry) = entry {
        let diff = format!(
            r#"{{"joins":{{}},"leaves":{{{}}}}}"#,
            String::from_utf8_lossy(entry)
        );
        hub.send_all(
            members,
            &message("null", "null", topic, "presence_diff", &diff),
        );
    }
    if members.is_empty() {
        topics.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_frame_splits_into_its_five_fields() {
        let f = split(r#"["1","7","room:a","phx_join",{"user":"u1"}]"#).unwrap();
        assert_eq!(
            f,
            Fields {
                join_ref: r#""1""#,
                reference: r#""7""#,
                topic: "room:a",
                event: "phx_join",
                payload: r#"{"user":"u1"}"#,
            }
        );
        let hb = split(r#"[null,"3","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!((hb.join_ref, hb.payload), ("null", "{}"));
        assert_eq!(split(r#"["1","2","a\"b","x",{}]"#), None);
        assert_eq!(split(r#"{"not":"a list"}"#), None);
        assert_eq!(split(r#"["1","2"]"#), None);
    }

    #[test]
    fn frames_carry_every_length_form() {
        assert_eq!(&ws_text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = ws_text(&[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = ws_text(&vec![b'x'; 70_000]);
        assert_eq!(big[1], 127);
        assert_eq!(big.len(), 70_010);
    }

    #[test]
    fn presence_entries_carry_the_user_key() {
        let hub = Hub::default();
        let entry = presence_entry(&hub, r#"{"user":"u42"}"#);
        let text = std::str::from_utf8(&entry).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&format!("{{{text}}}")).unwrap();
        assert_eq!(parsed["u42"]["metas"].as_array().map(Vec::len), Some(1));
    }
}
