//! Helpers shared by the example programs of `pgq-examples`: an HTTP client.
//!
//! The programs themselves are the binaries in `src/bin/`: `testq` (every
//! outcome), `webhook` (HTTP requests with back-off), `collector` and
//! `subscriber` (a stream into a permanent store), `mapreduce` (a pool of
//! parallel workers with results), `pgq-ticker` (a drop-in for pgqd),
//! `pgq-bench` (the benchmarks) and `pgq-daemon-demo` (a daemon on
//! `pgq-daemon` alone, which that crate's tests in `tests/it/pgq_daemon/` drive).

pub mod http;
