//! Crash points for fault-injection tests.
//!
//! Setting `PGQ_CONSUMERS_CRASH_AT=<point>` makes the process abort, as a
//! `kill -9` would, when the batch loop reaches that point. The points are
//! the steps between reading a batch and committing it:
//!
//! - `batch-read`: a batch was taken, nothing of it processed;
//! - `before-remote-commit`: the handler ran, nothing committed;
//! - `after-remote-commit`: the remote transaction committed, the queue one not;
//! - `after-queue-commit`: both committed.
//!
//! Unset (the normal case), a crash point costs one comparison.

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "PGQ_CONSUMERS_CRASH_AT";

/// Aborts the process if the crash point `point` is set.
pub(crate) fn crash_point(point: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    if CRASH_AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok()).as_deref() == Some(point) {
        log::warn!("crash point {point} reached: aborting as asked by {CRASH_AT_ENV}");
        log::logger().flush();
        std::process::abort();
    }
}
