//! `pgq-admin`: every PgQ queue, consumer, sub-consumer and failed event of
//! a database in one view, on the command line and as a web console.
//!
//! ```text
//! pgq-admin -d DSN status | queues | consumers [QUEUE] | failed QUEUE CONSUMER
//! pgq-admin -d DSN retry|delete QUEUE CONSUMER (ID...|all) | tick QUEUE | config QUEUE [KEY VALUE]
//! pgq-admin -d DSN serve [--listen 127.0.0.1:8080] [--writes --token-file FILE]
//! ```
//!
//! It reads with PgQ's and the framework's own functions (the `pgq` and
//! `pgq-consumers` crates), so a role with `pgq_reader` sees everything;
//! writes name the role they need when refused. Exit codes are the consumer
//! command line's: 0 ok, 1 usage or failed, 3 cannot connect, 4 wrong state
//! (the database has no PgQ).

mod cli;
mod commands;
mod failure;
mod format;
mod snapshot;
mod table;
mod ticking;
mod web;

fn main() -> pgq_consumers::ExitCode {
    cli::main()
}
