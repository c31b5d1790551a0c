//! The client side of the load: WebSocket connections speaking Phoenix's V2 JSON
//! serializer (`[join_ref, ref, topic, event, payload]`), joins and leaves that wait
//! for their replies, a paced ramp that opens many joined connections, and a drain
//! that keeps reading what the server sends to connections that are otherwise idle.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connect or a reply may take before the client gives up.
const PATIENCE: Duration = Duration::from_secs(30);

/// Opens a WebSocket connection (small buffers: the generator holds thousands).
pub async fn connect(url: &str) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    Ok(ws)
}

/// Opens a WebSocket connection from the loopback address `source` (any when
/// `None`), so that many connections can come from several source addresses.
pub async fn connect_from(url: &str, source: Option<std::net::Ipv4Addr>) -> Result<Ws, String> {
    let Some(source) = source else {
        return connect(url).await;
    };
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let server: std::net::SocketAddr = host
        .parse()
        .map_err(|e| format!("server address {host}: {e}"))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let opened = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind((source, 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
        let stream = socket
            .connect(server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .map_err(|e| format!("handshake: {e}"))
    };
    let (ws, _) = tokio::time::timeout(PATIENCE, opened)
        .await
        .map_err(|_| "connect timed out".to_owned())??;
    Ok(ws)
}

/// Sends one V2 frame.
pub async fn send(
    ws: &mut Ws,
    join_ref: u64,
    reference: u64,
    topic: &str,
    event: &str,
    payload: &str,
) -> Result<(), String> {
    let frame = format!(
        r#"["{join_ref}","{reference}",{},"{event}",{payload}]"#,
        Value::from(topic)
    );
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// The next text frame, or an error when the connection ends or `deadline` passes.
pub async fn next_text(ws: &mut Ws, deadline: Instant) -> Result<String, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => {
                return Err("the server closed the connection".into())
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(format!("receive: {e}")),
            Err(_) => return Err("timed out waiting for the server".into()),
        }
    }
}

/// Reads frames until the `phx_reply` to `reference` and returns its status
/// (`"ok"` or `"error"`); everything else that arrives meanwhile is skipped.
pub async fn wait_reply(ws: &mut Ws, reference: u64) -> Result<String, String> {
    let deadline = Instant::now() + PATIENCE;
    let wanted = Value::from(reference.to_string());
    loop {
        let text = next_text(ws, deadline).await?;
        // Most frames are pushes and broadcasts: skip them without parsing.
        if !text.contains("\"phx_reply\"") {
            continue;
        }
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if frame[1] == wanted && frame[3] == "phx_reply" {
            return Ok(frame[4]["status"].as_str().unwrap_or_default().to_owned());
        }
    }
}

/// Joins `topic` on an open connection (`join_ref` doubles as the join's ref).
pub async fn join_on(ws: &mut Ws, join_ref: u64, topic: &str, payload: &str) -> Result<(), String> {
    send(ws, join_ref, join_ref, topic, "phx_join", payload).await?;
    match wait_reply(ws, join_ref).await?.as_str() {
        "ok" => Ok(()),
        status => Err(format!("join of {topic} answered {status:?}")),
    }
}

/// Connects and joins `topic`.
pub async fn join(url: &str, topic: &str, payload: &str) -> Result<Ws, String> {
    let mut ws = connect(url).await?;
    join_on(&mut ws, 1, topic, payload).await?;
    Ok(ws)
}

/// Opens `n` things with `open(i)`, at most `concurrency` at a time and, when `rate`
/// is given, starting no more than `rate` per second (a gentle ramp).
pub async fn ramp<T, F, Fut>(
    n: usize,
    rate: Option<f64>,
    concurrency: usize,
    open: F,
) -> Vec<Result<T, String>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = tokio::time::Instant::now();
    futures::stream::iter(0..n)
        .then(move |i| async move {
            if let Some(rate) = rate.filter(|r| *r > 0.0) {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at).await;
            }
            i
        })
        .map(open)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// What the drained connections received.
#[derive(Debug, Default)]
pub struct Tally {
    /// Frames received.
    pub frames: AtomicU64,
    /// `presence_state` pushes received.
    pub presence_states: AtomicU64,
    /// Connections the server closed (or that failed).
    pub closed: AtomicU64,
    /// `phx_error` pushes received: a channel that crashed after its join (what a
    /// server without our `/metrics`, such as Phoenix, shows of a lost channel).
    pub channel_errors: AtomicU64,
}

impl Tally {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A connection being read in the background, as a browser tab reads its socket
/// (so that the server never sees an idle client as a slow one); reading stops
/// and the connection closes when this is dropped.
pub struct Drained(tokio::task::JoinHandle<()>);

impl Drop for Drained {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reading `ws` in the background, counting what arrives into `tally`.
pub fn drain(mut ws: Ws, tally: &Arc<Tally>) -> Drained {
    let tally = tally.clone();
    Drained(tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    tally.frames.fetch_add(1, Ordering::Relaxed);
                    if t.as_str().contains("\"presence_state\"") {
                        tally.presence_states.fetch_add(1, Ordering::Relaxed);
                    } else if t.as_str().contains("\"phx_error\"") {
                        tally.channel_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    tally.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {
                    tally.frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }))
}

/// Splits ramp results into the opened connections and the first error with a count.
pub fn opened<T>(results: Vec<Result<T, String>>) -> (Vec<T>, usize, Option<String>) {
    let mut ok = Vec::with_capacity(results.len());
    let mut failed = 0;
    let mut first = None;
    for r in results {
        match r {
            Ok(t) => ok.push(t),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    (ok, failed, first)
}

/// Reads an unsigned integer field `"key":123` from a frame we built ourselves,
/// without parsing the whole frame.
pub fn field_u64(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: &str = text[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_are_read_from_a_broadcast_frame() {
        let frame = r#"[null,null,"private:lat","shout",{"seq":17,"t":123456,"body":"x"}]"#;
        assert_eq!(field_u64(frame, "\"seq\":"), Some(17));
        assert_eq!(field_u64(frame, "\"t\":"), Some(123_456));
        assert_eq!(field_u64(frame, "\"missing\":"), None);
    }
}
