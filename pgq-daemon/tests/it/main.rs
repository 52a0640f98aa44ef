//! Integration tests: a real daemon (`pgq-daemon-demo`) driven through its commands
//! and signals.

mod harness;

mod commands;
mod foreground;
mod logging;
mod startup;
mod stopping;
