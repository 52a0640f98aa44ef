//! Reliability and security of a consumer, through the real `testq` binary:
//! the faults a daemon survives (SIGKILL, PostgreSQL restarted, backends
//! terminated, the remote database down, crashes between the commits, a
//! network gone silent),
//! bad input, hostile names, secrets, and least privilege. The README's
//! "Guarantees" and "Privileges" sections cite these tests.
//!
//! Each test has a database (or a PostgreSQL cluster of its own, when it
//! restarts the server) and a scratch directory of its own.

pub mod cluster;
mod encoding;
mod faults;
mod fencing;
mod files;
mod input;
mod network;
mod operator;
mod overflow;
mod privileges;
mod secrets;
