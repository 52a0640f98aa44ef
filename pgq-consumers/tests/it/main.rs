//! Integration tests of pgq-consumers against a real PostgreSQL with PgQ
//! (`PGQ_TEST_DSN`); every test gets a database of its own.

mod batch_query;
mod cascade;
mod cascade_mixed;
mod common;
mod connections;
mod coop;
mod errors;
mod failed;
mod interactive;
mod kinds;
mod outcomes;
mod privileges;
mod producer;
mod schema;
mod scripted;
mod ticker;
mod tracking;
mod writes;
