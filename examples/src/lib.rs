//! Helpers shared by the example programs of `pgq-examples`: an HTTP client.
//!
//! The programs themselves are the binaries in `src/bin/`: `testq` (every
//! outcome), `webhook` (HTTP requests with back-off), `collector` and
//! `subscriber` (a stream into a permanent store) and `mapreduce` (a pool of
//! parallel workers with results).

pub mod http;
