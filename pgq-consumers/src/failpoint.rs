//! Crash points for fault-injection tests, compiled in only with the
//! `failpoints` feature, which the workspace's tests turn on and a normal
//! build (`cargo build --release`) leaves off: a production daemon cannot be
//! crashed through its environment.
//!
//! With the feature, setting `PGQ_CONSUMERS_CRASH_AT=<point>` makes the
//! process abort, as a `kill -9` would, when the batch loop reaches that
//! point. The points are the steps between reading a batch and committing it:
//!
//! - `batch-read`: a batch was taken, nothing of it processed;
//! - `before-remote-commit`: the handler ran, nothing committed;
//! - `after-remote-commit`: the remote transaction committed, the queue one not;
//! - `after-queue-commit`: both committed.
//!
//! And the cascade worker's, between taking a provider's batch and finishing it:
//!
//! - `cascade-before-node-commit`: the batch copied, the node's transaction not committed;
//! - `cascade-after-node-commit`: committed, the batch's tick not made on the node;
//! - `cascade-after-tick`: the tick made, the batch not finished on the provider.
//!
//! Unset, a crash point costs one comparison; without the feature, nothing.

/// The environment variable naming the crash point.
#[cfg(any(feature = "failpoints", test))]
pub const CRASH_AT_ENV: &str = "PGQ_CONSUMERS_CRASH_AT";

/// Aborts the process if the crash point `point` is set.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_point(point: &str) {
    use std::sync::OnceLock;
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    if CRASH_AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok()).as_deref() == Some(point) {
        log::warn!("crash point {point} reached: aborting as asked by {CRASH_AT_ENV}");
        log::logger().flush();
        std::process::abort();
    }
}

/// Without the `failpoints` feature a crash point is nothing at all.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn crash_point(_point: &str) {}

#[cfg(test)]
mod tests {
    use std::process::Command;

    const POINTS: [&str; 4] = [
        "batch-read",
        "before-remote-commit",
        "after-remote-commit",
        "after-queue-commit",
    ];

    /// Passes every crash point; run by the test below in a process of its
    /// own, with the variable set.
    #[test]
    #[ignore = "run by crash_points_abort_only_with_the_failpoints_feature"]
    fn passing_every_crash_point() {
        for point in POINTS {
            super::crash_point(point);
        }
    }

    /// With the feature (the workspace's tests) the variable aborts the
    /// process at its point; without it (`cargo test -p pgq-consumers
    /// --lib`, which `.ci/run` runs, and every normal build) it does nothing.
    #[test]
    fn crash_points_abort_only_with_the_failpoints_feature() {
        let exe = std::env::current_exe().expect("the test binary");
        for point in POINTS {
            let child = Command::new(&exe)
                .args([
                    "--exact",
                    "failpoint::tests::passing_every_crash_point",
                    "--ignored",
                    "--nocapture",
                ])
                .env(super::CRASH_AT_ENV, point)
                .output()
                .expect("run the test binary");
            if cfg!(feature = "failpoints") {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(child.status.signal(), Some(6), "{point}: aborts: {child:?}");
            } else {
                assert!(child.status.success(), "{point}: nothing happens: {child:?}");
            }
        }
    }
}
