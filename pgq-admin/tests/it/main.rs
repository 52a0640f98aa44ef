//! Integration tests of `pgq-admin` against a real PostgreSQL with PgQ
//! (`PGQ_TEST_DSN`), pgqd, a Skytools Python consumer and, for the web
//! console, headless Chromium through WebDriver. Every test gets a database
//! of its own.
#![allow(clippy::unwrap_used)]

mod cli;
mod support;
mod web;
