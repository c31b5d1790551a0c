//! Test support shared by the workspace's test suites (never a dependency of a
//! library): bounded waits that fail with a clear message instead of
//! sleeping and hoping; throwaway `redis-server` and PostgreSQL processes on
//! free loopback ports that stop when their guard drops; the windows of
//! cluster tests, derived from the configured periods; and the check that a
//! test script ran every check it printed and none failed.
//!
//! Waits poll a condition and give up after an upper bound; the bound is a
//! limit for a hung test, never a measurement, so a slow machine only makes a
//! passing test slower, not a failing one.

#![deny(missing_docs)]

mod checks;
mod postgres;
mod redis;
mod timing;
mod wait;

pub use checks::assert_all_passed;
pub use postgres::Postgres;
pub use redis::Redis;
pub use timing::{ClusterTiming, MARGIN};
pub use wait::{free_port, wait_for, wait_until, POLL};
