//! Encode and decode costs of typical frames, and the cost of one broadcast
//! encoded once and handed to 10 000 subscribers.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use phx_protocol::{Broadcast, Frame, Message, Payload, Reply, Serializer};

/// A push body of about 200 bytes.
fn body() -> serde_json::Value {
    serde_json::json!({
        "user": "alice@example.com",
        "body": "The quick brown fox jumps over the lazy dog; the lazy dog sleeps on.",
        "at": 1_795_490_017_014u64,
        "tags": ["draft", "shared", "record:42"],
        "rev": 17
    })
}

fn codec(c: &mut Criterion) {
    let v1 = Serializer::V1Json;
    let v2 = Serializer::V2Json;
    let heartbeat = r#"[null,"42","phoenix","heartbeat",{}]"#;
    c.bench_function("decode v2 heartbeat", |b| {
        b.iter(|| v2.decode_text(black_box(heartbeat)))
    });

    let push = Message::new(
        Some("3".into()),
        Some("17".into()),
        "room:lobby",
        "new_msg",
        Payload::from(body()),
    );
    let v2_text = v2.encode_client(&push).expect("encodes");
    let v1_text = v1.encode_client(&push).expect("encodes");
    let Frame::Text(v2_text) = v2_text else {
        unreachable!()
    };
    let Frame::Text(v1_text) = v1_text else {
        unreachable!()
    };
    c.bench_function("decode v2 200-byte push", |b| {
        b.iter(|| v2.decode_text(black_box(v2_text.as_str())))
    });
    c.bench_function("decode v1 200-byte push", |b| {
        b.iter(|| v1.decode_text(black_box(v1_text.as_str())))
    });
    let bin = Message::new(
        Some("3".into()),
        Some("17".into()),
        "room:lobby",
        "new_msg",
        Payload::Binary(Bytes::from(vec![7u8; 200])),
    );
    let Frame::Binary(bin_frame) = v2.encode_client(&bin).expect("encodes") else {
        unreachable!()
    };
    c.bench_function("decode v2 binary 200-byte push", |b| {
        b.iter(|| v2.decode_binary(black_box(bin_frame.clone())))
    });

    let server_push = Message::new(
        Some("3".into()),
        None,
        "room:lobby",
        "new_msg",
        Payload::from(body()),
    );
    c.bench_function("encode v2 200-byte push", |b| {
        b.iter(|| v2.encode_message(black_box(&server_push)))
    });
    c.bench_function("encode v1 200-byte push", |b| {
        b.iter(|| v1.encode_message(black_box(&server_push)))
    });
    let reply = Reply::ok(
        Some("3".into()),
        Some("42".into()),
        "phoenix",
        Payload::empty_object(),
    );
    c.bench_function("encode v2 heartbeat reply", |b| {
        b.iter(|| v2.encode_reply(black_box(&reply)))
    });

    let broadcast = Broadcast::new("room:lobby", "new_msg", Payload::from(body()));
    c.bench_function("broadcast encoded once for 10 000 subscribers", |b| {
        b.iter(|| {
            let frame =
                std::sync::Arc::new(v2.encode_broadcast(black_box(&broadcast)).expect("encodes"));
            let mut handed = 0usize;
            for _ in 0..10_000 {
                let shared = black_box(frame.clone());
                handed += shared.len();
            }
            handed
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
