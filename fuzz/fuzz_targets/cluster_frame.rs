//! The frames one node publishes to the others (`phx_cluster::Frame`) and the
//! tracker gossip inside them (`phx_presence::Gossip`). Decoding never panics; a
//! frame that decodes re-encodes to exactly the same bytes, and a gossip that
//! decodes re-encodes to one that decodes equal.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use phx_cluster::Frame;
use phx_presence::Gossip;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    // The gossip decoder also sees bytes of its own, not only frames' tails.
    check_gossip(data);
    let Ok(frame) = Frame::decode(bytes.clone()) else {
        return;
    };
    let again = frame.encode().expect("a decoded frame re-encodes");
    assert_eq!(again, bytes);
    if let Frame::Gossip { gossip, .. } = &frame {
        check_gossip(gossip);
    }
});

fn check_gossip(data: &[u8]) {
    if let Ok(gossip) = Gossip::decode(data) {
        let again = Gossip::decode(&gossip.encode()).expect("its own encoding decodes");
        assert_eq!(again, gossip);
    }
}
