//! Bounded polling: wait until a condition holds, or fail naming what was
//! awaited and for how long.

use std::time::Duration;

/// How often a wait looks at its condition again.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it holds and returns how long that took
/// (on tokio's clock, so virtual under `start_paused`); panics with `what`
/// after `limit`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// let mut polls = 0;
/// phx_testkit::wait_until("the third poll", Duration::from_secs(5), || {
///     polls += 1;
///     polls == 3
/// })
/// .await;
/// # }
/// ```
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The blocking form of [`wait_until`], for tests that drive child processes
/// from plain threads; it measures on the real clock.
///
/// ```
/// use std::time::{Duration, Instant};
/// let start = Instant::now();
/// phx_testkit::wait_for("40 ms to pass", Duration::from_secs(5), || {
///     start.elapsed() >= Duration::from_millis(40)
/// });
/// ```
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A loopback port that was free a moment ago (for servers that cannot be
/// told to bind port 0 and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
