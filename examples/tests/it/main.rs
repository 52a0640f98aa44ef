//! Tests of the `testq` example through the real binary, against a real
//! PostgreSQL with PgQ (`PGQ_TEST_DSN`): every command and exit code, crashes
//! injected between the commits of a remote consumer, cooperative
//! sub-consumers, and a mixed stream processed as a daemon with the stock
//! pgqd as ticker. Every test has a database and a scratch directory of its own.

mod commands;
mod coop;
mod crash;
mod daemon;
mod loopback;
mod mapreduce;
mod mixed_stream;
mod stream;
mod support;
mod webhook;
