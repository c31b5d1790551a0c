//! `phx_ref` generation in Phoenix's format: 12 bytes — 8 of time, 2 identifying
//! the node instance, 2 of counter — written as 16 URL-safe base64 characters
//! (`phoenix_pubsub/lib/phoenix/tracker/shard.ex` `random_ref/0`).

use base64::Engine;

/// Makes `phx_ref`s that never repeat within one generator, and differ across
/// restarts through the random `instance` the caller picks at start.
///
/// ```
/// let mut refs = phx_presence::RefGen::new(0xBEEF);
/// let a = refs.next(1_000);
/// let b = refs.next(1_000); // same clock reading, still a new ref
/// assert_ne!(a, b);
/// assert_eq!(a.len(), 16);
/// ```
#[derive(Debug, Clone)]
pub struct RefGen {
    instance: u16,
    last_time: u64,
    counter: u16,
}

impl RefGen {
    /// A generator for one node incarnation; pass a random number.
    pub fn new(instance: u32) -> RefGen {
        let folded = (instance ^ (instance >> 16)) as u16;
        RefGen {
            instance: folded,
            last_time: 0,
            counter: 0,
        }
    }

    /// The next ref, given the current time in any unit that does not go backwards
    /// by much (nanoseconds since the epoch, in the runtime).
    pub fn next(&mut self, now: u64) -> String {
        // Time never repeats within a generator: a reading at or before the last one
        // is bumped past it, so refs stay unique however the clock behaves.
        let time = now.max(self.last_time.saturating_add(1));
        self.last_time = time;
        self.counter = self.counter.wrapping_add(1);
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&time.to_be_bytes());
        bytes[8..10].copy_from_slice(&self.instance.to_be_bytes());
        bytes[10..].copy_from_slice(&self.counter.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn refs_are_16_url_safe_characters() {
        let mut g = RefGen::new(1);
        for t in [0, 1, u64::MAX / 2, 1_795_490_017_014_000_000] {
            let r = g.next(t);
            assert_eq!(r.len(), 16);
            assert!(
                r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{r}"
            );
        }
    }

    #[test]
    fn refs_never_repeat_even_with_a_stuck_or_backward_clock() {
        let mut g = RefGen::new(9);
        let mut seen = HashSet::new();
        for i in 0..100_000u64 {
            let now = if i % 3 == 0 { 5 } else { 1_000 - (i % 7) };
            assert!(seen.insert(g.next(now)));
        }
    }

    #[test]
    fn different_instances_differ_at_the_same_time() {
        assert_ne!(RefGen::new(1).next(42), RefGen::new(2).next(42));
    }
}
