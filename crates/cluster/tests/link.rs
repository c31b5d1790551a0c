//! The Redis link against a real `redis-server`: over TLS (`rediss://`, a CA
//! and a server certificate made here with rcgen) with Redis AUTH (a password
//! and an ACL user in the URL), refusing a wrong password or an untrusted
//! certificate; every message sealed (a raw message published by a plain Redis
//! client is dropped and counted, a recorded sealed one replayed is dropped
//! and counted); and the outgoing queue bounded in bytes.
//!
//! Needs `redis-server` built with TLS (Debian's is).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use phx_cluster::{
    ClusterError, ClusterKey, LinkOptions, LinkState, Transport, TransportConfig, TransportEvent,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::sync::mpsc;

const PASSWORD: &str = "default-user-password";
const ACL_USER: &str = "phx";
const ACL_PASSWORD: &str = "phx-user-password";

/// A TLS-only `redis-server` with a password and an ACL user, killed on drop.
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    ca: Vec<u8>,
    child: Child,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let port = phx_testkit::free_port();
        let dir = std::env::temp_dir().join(format!("phx-link-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "phx-cluster test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");

        let conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {dir}\n\
             tls-cert-file {dir}/cert.pem\ntls-key-file {dir}/key.pem\ntls-ca-cert-file {dir}/ca.pem\n\
             tls-auth-clients no\nrequirepass {PASSWORD}\n\
             user {ACL_USER} on >{ACL_PASSWORD} ~* &* +@all\nlogfile {dir}/redis.log\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("redis.conf"), conf).expect("write redis.conf");
        let child = Command::new("redis-server")
            .arg(dir.join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        phx_testkit::wait_for(
            &format!("redis-server with TLS to listen on {port}"),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        TlsRedis {
            port,
            ca: ca.pem().into_bytes(),
            dir,
            child,
        }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}/", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn key() -> ClusterKey {
    ClusterKey::derive(b"link-test-cluster-secret-of-sixty-four-bytes-at-the-very-least!!")
        .expect("key")
}

fn options(redis: &TlsRedis) -> LinkOptions {
    LinkOptions {
        key: Some(key()),
        tls_ca: Some(redis.ca.clone()),
        backoff_max: Duration::from_millis(200),
        ..LinkOptions::default()
    }
}

async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    phx_testkit::wait_until(what, Duration::from_secs(15), cond).await;
}

/// The next message's payload, skipping link state events.
async fn next_message(events: &mut mpsc::Receiver<TransportEvent>) -> Bytes {
    let wait = async {
        loop {
            match events.recv().await.expect("link running") {
                TransportEvent::Message { payload, .. } => return payload,
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .expect("a message within 15 s")
}

/// A plain Redis client (no key) on the same TLS server.
fn plain_client(redis: &TlsRedis) -> redis::Client {
    redis::Client::build_with_tls(
        redis.url(ACL_USER, ACL_PASSWORD),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(redis.ca.clone()),
        },
    )
    .expect("plain client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_password_or_an_acl_user_carries_sealed_messages() {
    let redis = TlsRedis::start();
    let channel = "phx:all".to_owned();
    // One link as the ACL user, one as the default user with its password.
    let (a, _a_events) = Transport::start(TransportConfig::for_node(
        redis.url(ACL_USER, ACL_PASSWORD),
        vec![channel.clone()],
        "a",
        options(&redis),
    ))
    .expect("link a");
    let (b, mut b_events) = Transport::start(TransportConfig::for_node(
        redis.url("", PASSWORD),
        vec![channel.clone()],
        "b",
        options(&redis),
    ))
    .expect("link b");
    wait_until("both links up over TLS", || {
        a.stats().state == LinkState::Connected && b.stats().state == LinkState::Connected
    })
    .await;

    // What a eavesdropper subscribed with a plain client sees is not the frame.
    let plain = plain_client(&redis);
    let mut spy = plain.get_async_pubsub().await.expect("spy connects");
    spy.subscribe(&channel).await.expect("spy subscribes");
    let body = b"relayed long-poll body: {\"secret\":\"for the victim only\"}";
    assert!(
        a.publish_confirmed(&channel, Bytes::from_static(body))
            .await
    );
    assert_eq!(&next_message(&mut b_events).await[..], &body[..]);
    let recorded: Vec<u8> = {
        let mut stream = spy.on_message();
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the spy sees the message")
            .expect("spy stream");
        msg.get_payload_bytes().to_vec()
    };
    assert!(
        !recorded.windows(12).any(|w| w == &body[..12]),
        "the message is not readable on Redis"
    );

    // A raw message from a plain client is dropped and counted, not delivered.
    let mut conn = plain
        .get_multiplexed_async_connection()
        .await
        .expect("plain publisher");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(&body[..])
        .query_async(&mut conn)
        .await
        .expect("raw publish");
    // The recorded sealed message published again is a replay.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(&recorded[..])
        .query_async(&mut conn)
        .await
        .expect("replay publish");
    wait_until("the forged and the replayed message counted", || {
        let s = b.stats();
        s.forged >= 1 && s.replayed >= 1
    })
    .await;
    // And a genuine one after them still arrives: they were dropped, not delivered.
    assert!(
        a.publish_confirmed(&channel, Bytes::from_static(b"after"))
            .await
    );
    assert_eq!(&next_message(&mut b_events).await[..], b"after");
    let s = b.stats();
    assert_eq!((s.forged, s.replayed), (1, 1), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_untrusted_certificate_or_plain_tcp_never_connect() {
    let redis = TlsRedis::start();
    let mut untrusted = options(&redis);
    untrusted.tls_ca = None; // the system's CAs do not know the test CA
    let plain_url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port);
    // A CA for a plain redis:// URL is a configuration error, refused at once.
    assert!(Transport::start(TransportConfig::for_node(
        plain_url.clone(),
        vec![],
        "x",
        options(&redis)
    ))
    .is_err());
    let mut plain = options(&redis);
    plain.tls_ca = None;
    let links: Vec<Transport> = [
        (redis.url(ACL_USER, "wrong-password"), options(&redis)),
        (redis.url("", "wrong-password"), options(&redis)),
        (redis.url(ACL_USER, ACL_PASSWORD), untrusted),
        (plain_url, plain),
    ]
    .into_iter()
    .map(|(url, opts)| {
        Transport::start(TransportConfig::for_node(url, vec!["c".into()], "x", opts))
            .expect("link starts (and retries)")
            .0
    })
    .collect();
    wait_until("every link failed at least twice", || {
        links.iter().all(|l| l.stats().errors >= 2)
    })
    .await;
    for link in &links {
        assert_eq!(link.stats().state, LinkState::Connecting, "{link:?}");
        assert_eq!(link.stats().reconnects, 0, "{link:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outgoing_queue_is_bounded_in_bytes_and_counts_what_it_drops() {
    // A silent "Redis": the kernel accepts the connection, nobody answers, so
    // the link's first attempt waits for its deadline and the queue fills.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = silent.local_addr().expect("addr").port();
    let options = LinkOptions {
        key: Some(key()),
        queue_bytes: 10_000,
        deadline: Duration::from_secs(60),
        ..LinkOptions::default()
    };
    let (link, _events) = Transport::start(TransportConfig::for_node(
        format!("redis://127.0.0.1:{port}/"),
        vec!["c".into()],
        "n",
        options,
    ))
    .expect("link");
    // While the first attempt waits the task drains nothing; the bytes
    // queued can never pass the bound.
    let mut refused = 0u64;
    for _ in 0..100 {
        match link.publish("c", Bytes::from(vec![0u8; 1_000])) {
            Ok(()) => {}
            Err(ClusterError::QueueFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(link.stats().queued_bytes <= 10_000, "{:?}", link.stats());
    }
    let s = link.stats();
    assert!(
        refused >= 90,
        "at most ten sealed 1 000-byte messages fit: {refused}"
    );
    assert!(s.dropped >= refused, "{s:?}");
    assert!(s.dropped_bytes >= refused * 1_000, "{s:?}");
    assert_eq!(s.state, LinkState::Connecting);
    drop(silent);
}
