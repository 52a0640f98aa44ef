//! Integration tests of the example consumers: the real binaries against a real
//! PostgreSQL with PgQ (`PGQ_TEST_DSN`); every test gets a database and a
//! scratch directory of its own. For `testq`: every command and exit code
//! (`commands`), crashes injected between the commits (`crash`), cooperative
//! sub-consumers (`coop`), the daemon (`daemon`), and a mixed stream with the
//! stock pgqd as ticker (`mixed_stream`), running it as a production service: metrics,
//! probes, the stop deadline, systemd's notify protocol, `status --json` (`ops`). For
//! `pgq-cascade`: its admin commands, and its worker aborted at each step of a batch
//! (`cascade`). And pgq-daemon's own tests, through its demo daemon (`pgq_daemon`),
//! which need no database.

mod cascade;
mod commands;
mod coop;
mod crash;
mod daemon;
mod loopback;
mod mapreduce;
mod mixed_stream;
mod ops;
mod pgq_daemon;
mod reliability;
mod stream;
mod support;
mod ticker;
mod webhook;
