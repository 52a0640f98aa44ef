//! The connection layer: connecting the way libpq does (its connection
//! strings, `PG*` variables and password file, read by [`conninfo`] and
//! [`libpq`]), TLS with rustls ([`tls`]), sockets with keepalives
//! ([`socket`]) and a watch for a silent server ([`silence`]). The rest of
//! the crate reaches it through [`connect`](connect::connect) and its
//! siblings only; a connection string is a
//! [`ConnString`](crate::ConnString) outside.

pub(crate) mod connect;
pub(crate) mod conninfo;
pub(crate) mod libpq;
mod silence;
mod socket;
mod tls;
