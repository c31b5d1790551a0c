//! What sealing costs: seal + open (HMAC-SHA256 and XChaCha20 over the frame,
//! the replay window) per message, for a small broadcast and a large one, on
//! one core. No Redis needed.
//!
//! Run: `cargo bench -p phx-cluster --bench seal`. Prints one line per size.

use std::time::{Duration, Instant};

use phx_cluster::{ClusterKey, Opener, Sealer};

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, as
    // a quick check that it works (a few messages, figures not meaningful).
    let measuring = std::env::args().any(|a| a == "--bench");
    let key = ClusterKey::derive(&[42u8; 64]).expect("key");
    for size in [100usize, 1_024, 65_536] {
        let sealer = Sealer::new(key.clone(), "bench-node").expect("sealer");
        let mut opener = Opener::new(key.clone(), Duration::from_secs(60));
        let frame = vec![7u8; size];
        let n: u32 = match (measuring, size > 10_000) {
            (false, _) => 10,
            (true, true) => 5_000,
            (true, false) => 100_000,
        };
        let start = Instant::now();
        for _ in 0..n {
            let sealed = sealer.seal(&frame).expect("seal");
            let opened = opener.open(&sealed).expect("open");
            assert_eq!(opened.frame.len(), size);
        }
        let per = start.elapsed() / n;
        let mib_s = size as f64 / per.as_secs_f64() / (1 << 20) as f64;
        println!(
            "seal + open, {size:>6}-byte frame: {per:?} per message ({mib_s:.0} MiB/s), overhead {} bytes",
            sealer.seal(&frame).expect("seal").len() - size
        );
    }
}
