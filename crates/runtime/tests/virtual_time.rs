//! Long-poll sessions on tokio's virtual clock (`start_paused`): requests go
//! to the endpoint as a tower `Service`, in-process, with no socket whose I/O
//! could race the paused clock, so the default 10 s window is used as is and
//! the tests take no real time. The clock only moves when every task waits,
//! straight to the next timer, so what is checked is the order of events
//! (still open halfway through the window, gone after it), not a duration.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use phx_runtime::{Config, Endpoint};
use serde_json::{json, Value};
use support::{wait_until, PresenceRoom};
use tower_service::Service;

/// One request through the endpoint's service; the status and the JSON body.
async fn call(endpoint: &Endpoint, method: &str, uri: &str, body: &str) -> (u16, Value) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/x-ndjson")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = endpoint.service().call(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An endpoint with the shared presence room and the default long-poll window.
fn endpoint() -> Endpoint {
    Endpoint::builder()
        .config(Config {
            check_origin: phx_runtime::CheckOrigin::Disabled,
            ..Config::default()
        })
        .channel("room:*", |_, _| PresenceRoom::default())
        .build()
}

/// Opens a session and joins `topic` in it; returns the session's token.
async fn joined_session(endpoint: &Endpoint, topic: &str) -> String {
    let (status, body) = call(endpoint, "GET", "/socket/longpoll?vsn=2.0.0", "").await;
    assert_eq!((status, &body["status"]), (200, &json!(410)), "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    let uri = format!("/socket/longpoll?vsn=2.0.0&token={token}");
    let join = json!(["1", "1", topic, "phx_join", {"user": "lp"}]).to_string();
    let (status, body) = call(endpoint, "POST", &uri, &join).await;
    assert_eq!((status, &body["status"]), (200, &json!(200)), "{body}");
    wait_until("the join tracked", support::WAIT, || {
        endpoint.presence().list(topic).len() == 1
    })
    .await;
    token
}

#[tokio::test(start_paused = true)]
async fn an_unpolled_session_outlives_half_its_window_and_ends_after_it() {
    let endpoint = endpoint();
    let window = endpoint.config().longpoll_window;
    assert_eq!(window, Duration::from_secs(10), "the default window");
    joined_session(&endpoint, "room:v1").await;
    let opened = tokio::time::Instant::now();

    tokio::time::sleep(window / 2).await;
    assert_eq!(endpoint.metrics().longpoll_sessions, 1, "still open");
    assert_eq!(endpoint.presence().list("room:v1").len(), 1);

    // Gone once a window passes unpolled (checked every 1.5 windows, as
    // Phoenix does), with its presence.
    wait_until("the unpolled session ended", 4 * window, || {
        endpoint.metrics().longpoll_sessions == 0
    })
    .await;
    assert!(opened.elapsed() >= window, "not before a whole window");
    assert!(endpoint.presence().list("room:v1").is_empty(), "no ghost");
}

#[tokio::test(start_paused = true)]
async fn a_session_polled_within_each_window_stays_open() {
    let endpoint = endpoint();
    let window = endpoint.config().longpoll_window;
    let token = joined_session(&endpoint, "room:v2").await;
    let uri = format!("/socket/longpoll?vsn=2.0.0&token={token}");
    // Five windows of polls: each poll with nothing to say is held for a
    // window and answered 204; the session never lapses.
    let began = tokio::time::Instant::now();
    while began.elapsed() < 5 * window {
        let (status, body) = call(&endpoint, "GET", &uri, "").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["status"] == json!(200) || body["status"] == json!(204),
            "the session is still there: {body}"
        );
    }
    assert_eq!(endpoint.metrics().longpoll_sessions, 1);
    assert_eq!(endpoint.presence().list("room:v2").len(), 1);
}
