//! pgq-daemon's integration tests: a real daemon (`pgq-daemon-demo`, a
//! binary of this package built on pgq-daemon alone) driven through its
//! commands and signals. They need no database.

mod harness;

mod commands;
mod foreground;
mod logging;
mod startup;
mod stopping;
