//! The sealed envelope every inter-node frame travels in over Redis: anyone
//! who can reach Redis can neither read a frame nor speak for a node, and a
//! frame seen once is not accepted again.
//!
//! Both keys come from the cluster secret (`--secret-key-base`, at least 64
//! bytes, as Phoenix requires) through HKDF-SHA256 with a fixed salt and one
//! label per key. A frame is encrypted with XChaCha20 under a random 192-bit
//! nonce, then everything (header, nonce, ciphertext) is authenticated with
//! HMAC-SHA256 (encrypt-then-MAC):
//!
//! ```text
//! u8   envelope version (1)
//! u16  sender node name length, name (UTF-8)
//! u64  sender incarnation (random per link start)
//! u64  counter: 1, 2, 3, ... per (node, incarnation)
//! u64  sent at: milliseconds since the Unix epoch, the sender's clock
//! 24B  nonce
//! ..   the frame, encrypted
//! 32B  HMAC-SHA256 of all the bytes before it
//! ```
//!
//! A receiver checks the tag first (in constant time), then the age (`sent at`
//! within `max_age` of its own clock), then the counter against a sliding
//! window of the last 128 counters of that (node, incarnation): a duplicate, or
//! a counter older than the window, is refused. A sender's window is forgotten
//! only once every frame it accepted is past `max_age`, so a recorded frame can
//! never be replayed: while its window is kept the counter refuses it, after
//! that its age does. Integers are big-endian; every number read is checked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::XChaCha20;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ClusterError;

/// The envelope version this build speaks.
pub const ENVELOPE_VERSION: u8 = 1;
/// The shortest cluster secret accepted, in bytes (Phoenix's rule for
/// `secret_key_base`).
pub const MIN_SECRET_LEN: usize = 64;

const SALT: &[u8] = b"phx-cluster sealed frame v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 32;
/// version, name length, incarnation, counter, sent at, nonce.
const MIN_HEADER: usize = 1 + 2 + 8 + 8 + 8 + NONCE_LEN;
/// How many counters below the highest one a window remembers.
const WINDOW: u64 = 128;
/// Senders (node, incarnation) whose windows are kept at most; only frames
/// with a valid tag create one.
const MAX_SENDERS: usize = 4_096;

type HmacSha256 = Hmac<Sha256>;

/// The two keys derived from the cluster secret. Its `Debug` shows nothing.
///
/// ```
/// use phx_cluster::ClusterKey;
///
/// let secret = [7u8; 64];
/// assert!(ClusterKey::derive(&secret).is_ok());
/// assert!(ClusterKey::derive(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct ClusterKey {
    encrypt: [u8; 32],
    mac: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Derives the keys from the cluster secret; refuses a secret shorter than
    /// [`MIN_SECRET_LEN`] bytes.
    pub fn derive(secret: &[u8]) -> Result<ClusterKey, ClusterError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(ClusterError::Invalid {
                what: "cluster secret",
                reason: format!("{} bytes, at least {MIN_SECRET_LEN} needed", secret.len()),
            });
        }
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret);
        let mut key = ClusterKey {
            encrypt: [0; 32],
            mac: [0; 32],
        };
        let expanded = hk
            .expand(b"encrypt", &mut key.encrypt)
            .and_then(|()| hk.expand(b"authenticate", &mut key.mac));
        expanded.map_err(|_| ClusterError::Invalid {
            what: "cluster secret",
            reason: "key derivation failed".into(),
        })?;
        Ok(key)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail for 32 bytes.
        <HmacSha256 as Mac>::new_from_slice(&self.mac).unwrap_or_else(|_| unreachable!())
    }

    fn apply_keystream(&self, nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
        let mut cipher = XChaCha20::new(&self.encrypt.into(), nonce.into());
        cipher.apply_keystream(data);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seals this node's frames: one per link, shared by every publisher.
///
/// ```
/// use phx_cluster::{ClusterKey, Opener, Sealer};
/// use std::time::Duration;
///
/// let key = ClusterKey::derive(&[1u8; 64]).unwrap();
/// let sealer = Sealer::new(key.clone(), "web-1").unwrap();
/// let sealed = sealer.seal(b"hello").unwrap();
/// let mut opener = Opener::new(key, Duration::from_secs(60));
/// let opened = opener.open(&sealed).unwrap();
/// assert_eq!((opened.node.as_str(), &opened.frame[..]), ("web-1", &b"hello"[..]));
/// assert!(opener.open(&sealed).is_err(), "a replay is refused");
/// ```
#[derive(Debug)]
pub struct Sealer {
    key: ClusterKey,
    node: String,
    incarnation: u64,
    counter: AtomicU64,
}

impl Sealer {
    /// A sealer for `node` (at most 65 535 bytes) with a new random incarnation.
    pub fn new(key: ClusterKey, node: impl Into<String>) -> Result<Sealer, ClusterError> {
        let node = node.into();
        if u16::try_from(node.len()).is_err() {
            return Err(ClusterError::Invalid {
                what: "node name",
                reason: "longer than 65 535 bytes".into(),
            });
        }
        Ok(Sealer {
            key,
            node,
            incarnation: rand::random(),
            counter: AtomicU64::new(0),
        })
    }

    /// The incarnation this sealer stamps on its frames.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Encrypts and authenticates `frame` under the next counter.
    pub fn seal(&self, frame: &[u8]) -> Result<Bytes, ClusterError> {
        let counter = self
            .counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1))
            .map_err(|_| ClusterError::Invalid {
                what: "frame counter",
                reason: "exhausted".into(),
            })?
            + 1;
        self.seal_at(frame, counter, now_ms())
    }

    fn seal_at(&self, frame: &[u8], counter: u64, sent: u64) -> Result<Bytes, ClusterError> {
        let name_len = u16::try_from(self.node.len()).map_err(|_| ClusterError::Invalid {
            what: "node name",
            reason: "longer than 65 535 bytes".into(),
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut buf = BytesMut::with_capacity(MIN_HEADER + self.node.len() + frame.len() + TAG_LEN);
        buf.put_u8(ENVELOPE_VERSION);
        buf.put_u16(name_len);
        buf.put_slice(self.node.as_bytes());
        buf.put_u64(self.incarnation);
        buf.put_u64(counter);
        buf.put_u64(sent);
        buf.put_slice(&nonce);
        let start = buf.len();
        buf.put_slice(frame);
        self.key.apply_keystream(&nonce, &mut buf[start..]);
        let mut mac = self.key.mac();
        mac.update(&buf);
        buf.put_slice(&mac.finalize().into_bytes());
        Ok(buf.freeze())
    }
}

/// A frame that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sending link's node name.
    pub node: String,
    /// The sending link's incarnation.
    pub incarnation: u64,
    /// The frame's counter.
    pub counter: u64,
    /// The frame, decrypted.
    pub frame: Bytes,
}

/// Why a sealed frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Malformed, another version, or a tag that does not verify: not sealed
    /// with this cluster's key, or altered.
    #[error("not authentic: {0}")]
    Forged(&'static str),
    /// Authentic but seen before, older than the window or `max_age`, or from
    /// one sender too many.
    #[error("replayed: {0}")]
    Replayed(&'static str),
}

/// Which counters of one (node, incarnation) were accepted.
#[derive(Debug)]
struct Window {
    highest: u64,
    /// Bit `i`: counter `highest - i` was accepted.
    seen: u128,
    /// The newest `sent at` accepted.
    newest_sent: u64,
}

impl Window {
    fn check(&self, counter: u64) -> Result<(), &'static str> {
        if counter == 0 {
            return Err("counter 0");
        }
        if counter > self.highest {
            return Ok(());
        }
        let back = self.highest - counter;
        if back >= WINDOW {
            Err("counter older than the window")
        } else if self.seen & (1u128 << back) != 0 {
            Err("duplicate counter")
        } else {
            Ok(())
        }
    }

    /// Records `counter`, which [`Window::check`] accepted.
    fn record(&mut self, counter: u64, sent: u64) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = counter;
        } else {
            self.seen |= 1u128 << (self.highest - counter);
        }
        self.newest_sent = self.newest_sent.max(sent);
    }
}

/// Opens the frames of every node: verifies, refuses replays, decrypts. One
/// per link, kept across reconnections.
#[derive(Debug)]
pub struct Opener {
    key: ClusterKey,
    max_age_ms: u64,
    senders: HashMap<(String, u64), Window>,
    opened: u64,
}

struct Header<'a> {
    node: &'a [u8],
    incarnation: u64,
    counter: u64,
    sent: u64,
    nonce: [u8; NONCE_LEN],
    body: &'a [u8],
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Rejection> {
    if buf.len() < n {
        return Err(Rejection::Forged("truncated"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u64(buf: &mut &[u8]) -> Result<u64, Rejection> {
    let bytes = take(buf, 8)?;
    let mut arr = [0u8; 8];
    arr.copy_from_slice(bytes);
    Ok(u64::from_be_bytes(arr))
}

fn parse(mut buf: &[u8]) -> Result<Header<'_>, Rejection> {
    let version = take(&mut buf, 1)?[0];
    if version != ENVELOPE_VERSION {
        return Err(Rejection::Forged("unknown envelope version"));
    }
    let len = take(&mut buf, 2)?;
    let node = take(&mut buf, usize::from(u16::from_be_bytes([len[0], len[1]])))?;
    let incarnation = take_u64(&mut buf)?;
    let counter = take_u64(&mut buf)?;
    let sent = take_u64(&mut buf)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(take(&mut buf, NONCE_LEN)?);
    Ok(Header {
        node,
        incarnation,
        counter,
        sent,
        nonce,
        body: buf,
    })
}

impl Opener {
    /// An opener refusing frames whose `sent at` is further than `max_age`
    /// from this node's clock (the clocks of the nodes must agree that well).
    pub fn new(key: ClusterKey, max_age: Duration) -> Opener {
        Opener {
            key,
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            senders: HashMap::new(),
            opened: 0,
        }
    }

    /// Verifies and decrypts one sealed frame.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Opened, Rejection> {
        self.open_at(sealed, now_ms())
    }

    fn open_at(&mut self, sealed: &[u8], now: u64) -> Result<Opened, Rejection> {
        if sealed.len() < MIN_HEADER + TAG_LEN {
            return Err(Rejection::Forged("too short"));
        }
        let (signed, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        if signed.first() != Some(&ENVELOPE_VERSION) {
            return Err(Rejection::Forged("unknown envelope version"));
        }
        let mut mac = self.key.mac();
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| Rejection::Forged("tag does not verify"))?;
        let header = parse(signed)?;
        if now.abs_diff(header.sent) > self.max_age_ms {
            return Err(Rejection::Replayed("sent outside the accepted age"));
        }
        let node = std::str::from_utf8(header.node)
            .map_err(|_| Rejection::Forged("node name is not UTF-8"))?;
        self.opened = self.opened.wrapping_add(1);
        if self.opened.is_multiple_of(1_024) {
            self.prune(now);
        }
        let id = (node.to_owned(), header.incarnation);
        if !self.senders.contains_key(&id) && self.senders.len() >= MAX_SENDERS {
            self.prune(now);
            if self.senders.len() >= MAX_SENDERS {
                return Err(Rejection::Replayed("too many senders"));
            }
        }
        let window = self.senders.entry(id).or_insert(Window {
            highest: 0,
            seen: 0,
            newest_sent: 0,
        });
        window.check(header.counter).map_err(Rejection::Replayed)?;
        window.record(header.counter, header.sent);
        let mut frame = header.body.to_vec();
        self.key.apply_keystream(&header.nonce, &mut frame);
        Ok(Opened {
            node: node.to_owned(),
            incarnation: header.incarnation,
            counter: header.counter,
            frame: Bytes::from(frame),
        })
    }

    /// Forgets the senders none of whose frames could be accepted any more.
    fn prune(&mut self, now: u64) {
        let max_age = self.max_age_ms;
        self.senders
            .retain(|_, w| w.newest_sent.saturating_add(max_age) >= now);
    }

    /// How many senders' windows are kept.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::derive(&[byte; 64]).unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn frames_round_trip_and_are_not_readable() {
        let sealer = Sealer::new(key(1), "n1").unwrap();
        let secret = b"long-poll body: the victim's messages";
        let sealed = sealer.seal(secret).unwrap();
        assert!(
            !sealed.windows(12).any(|w| w == &secret[..12]),
            "the frame travels encrypted"
        );
        let mut opener = Opener::new(key(1), MINUTE);
        let opened = opener.open(&sealed).unwrap();
        assert_eq!(opened.frame, Bytes::from_static(secret));
        assert_eq!(opened.node, "n1");
        assert_eq!(opened.counter, 1);
        assert_eq!(opened.incarnation, sealer.incarnation());
    }

    #[test]
    fn another_key_a_flipped_bit_or_a_cut_are_forgeries() {
        let sealed = Sealer::new(key(1), "n1").unwrap().seal(b"frame").unwrap();
        let mut other = Opener::new(key(2), MINUTE);
        assert_eq!(
            other.open(&sealed),
            Err(Rejection::Forged("tag does not verify"))
        );
        let mut opener = Opener::new(key(1), MINUTE);
        for i in 0..sealed.len() {
            let mut bad = sealed.to_vec();
            bad[i] ^= 0x40;
            assert!(
                matches!(opener.open(&bad), Err(Rejection::Forged(_))),
                "bit flipped in byte {i}"
            );
        }
        for cut in 0..sealed.len() {
            assert!(opener.open(&sealed[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(opener.senders(), 0, "forgeries leave no state");
        assert!(opener.open(&sealed).is_ok());
    }

    #[test]
    fn replays_duplicates_and_old_counters_are_refused_reordering_is_not() {
        let sealer = Sealer::new(key(1), "n1").unwrap();
        let frames: Vec<Bytes> = (0..200).map(|_| sealer.seal(b"x").unwrap()).collect();
        let mut opener = Opener::new(key(1), MINUTE);
        // Out of order within the window: accepted once each.
        assert!(opener.open(&frames[5]).is_ok());
        assert!(opener.open(&frames[3]).is_ok());
        assert!(opener.open(&frames[4]).is_ok());
        assert_eq!(
            opener.open(&frames[3]),
            Err(Rejection::Replayed("duplicate counter"))
        );
        assert!(opener.open(&frames[199]).is_ok());
        assert_eq!(
            opener.open(&frames[10]),
            Err(Rejection::Replayed("counter older than the window"))
        );
        assert!(opener.open(&frames[150]).is_ok());
        // A new incarnation of the same node has its own counters.
        let restarted = Sealer::new(key(1), "n1").unwrap();
        assert!(opener.open(&restarted.seal(b"y").unwrap()).is_ok());
    }

    #[test]
    fn frames_outside_the_age_are_refused_and_windows_are_forgotten_after_it() {
        let sealer = Sealer::new(key(1), "n1").unwrap();
        let now = now_ms();
        let old = sealer.seal_at(b"x", 1, now - 120_000).unwrap();
        let future = sealer.seal_at(b"x", 2, now + 120_000).unwrap();
        let fresh = sealer.seal_at(b"x", 3, now).unwrap();
        let mut opener = Opener::new(key(1), MINUTE);
        for frame in [&old, &future] {
            assert_eq!(
                opener.open_at(frame, now),
                Err(Rejection::Replayed("sent outside the accepted age"))
            );
        }
        assert!(opener.open_at(&fresh, now).is_ok());
        opener.prune(now + 30_000);
        assert_eq!(
            opener.senders(),
            1,
            "kept while a replay could pass the age check"
        );
        opener.prune(now + 61_000);
        assert_eq!(opener.senders(), 0);
        // After that its age refuses it.
        assert!(opener.open_at(&fresh, now + 61_000).is_err());
    }

    #[test]
    fn huge_counters_and_names_are_checked() {
        let sealer = Sealer::new(key(1), "n".repeat(300)).unwrap();
        let mut opener = Opener::new(key(1), MINUTE);
        let now = now_ms();
        assert!(opener
            .open_at(&sealer.seal_at(b"a", u64::MAX, now).unwrap(), now)
            .is_ok());
        assert_eq!(
            opener.open_at(&sealer.seal_at(b"b", u64::MAX, now).unwrap(), now),
            Err(Rejection::Replayed("duplicate counter"))
        );
        assert_eq!(
            opener.open_at(&sealer.seal_at(b"c", 0, now).unwrap(), now),
            Err(Rejection::Replayed("counter 0"))
        );
        assert!(Sealer::new(key(1), "n".repeat(70_000)).is_err());
    }
}
