//! Integration tests of the example consumers: the real binaries against a real
//! PostgreSQL with PgQ (`PGQ_TEST_DSN`); every test gets a database of its own.

mod daemon;
