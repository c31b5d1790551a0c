//! Time windows of cluster tests derived from the periods the nodes were
//! configured with, instead of guessed constants: when a crashed node must be
//! gone, how soon a leave can only have been a goodbye, and how long a state
//! must hold to show that nothing comes back.

use std::time::Duration;

/// What a bound the protocol states gets on top for the test machine: a
/// loaded 2-core machine's scheduling, Redis round trips, and a client
/// process hearing of the change. Never part of the behaviour checked.
pub const MARGIN: Duration = Duration::from_secs(1);

/// The tracker periods a cluster under test runs with.
///
/// ```
/// use std::time::Duration;
/// let t = phx_testkit::ClusterTiming::from_ms(200, 1_000);
/// assert_eq!(t.crash_bound(), Duration::from_millis(1_200) + phx_testkit::MARGIN);
/// assert_eq!(t.before_detection(), Duration::from_millis(800));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ClusterTiming {
    /// Between two heartbeats of a node (`broadcast_period_ms`, `--heartbeat-ms`).
    pub heartbeat: Duration,
    /// Silence after which a node is taken for down (`down_period_ms`, `--down-period-ms`).
    pub down: Duration,
}

impl ClusterTiming {
    /// From the two periods in milliseconds, as the configuration writes them.
    pub fn from_ms(heartbeat_ms: u64, down_ms: u64) -> ClusterTiming {
        assert!(
            down_ms > heartbeat_ms,
            "the down period ({down_ms} ms) must be longer than a heartbeat ({heartbeat_ms} ms)"
        );
        ClusterTiming {
            heartbeat: Duration::from_millis(heartbeat_ms),
            down: Duration::from_millis(down_ms),
        }
    }

    /// When a crashed node's presences must be gone everywhere: the down
    /// period plus one heartbeat (the bound the tracker promises, as the last
    /// heartbeat heard may be that old), plus [`MARGIN`].
    pub fn crash_bound(&self) -> Duration {
        self.down + self.heartbeat + MARGIN
    }

    /// Sooner than this after a node stops, down detection cannot have removed
    /// it (its last heartbeat is at most one period old when it stops), so a
    /// removal seen within it was caused by the goodbye or a new incarnation.
    pub fn before_detection(&self) -> Duration {
        self.down - self.heartbeat
    }

    /// How long a converged state must hold unchanged to show that nothing
    /// comes back: past the down period, with three heartbeats (and their
    /// gossip) after it.
    pub fn steady(&self) -> Duration {
        self.down + 3 * self.heartbeat
    }
}
