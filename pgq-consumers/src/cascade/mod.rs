//! Cascaded queues (`pgq_node`): the worker that keeps a node
//! ([`Worker`]), and the administration of a cascade ([`admin`]).
//!
//! A cascade spreads one PgQ queue over several databases: a root where
//! events are produced and ticked, branches that hold a full copy of the
//! queue (same event ids, same tick ids) and can take the root's place,
//! leaves that only consume. Every node has one worker; consumers read from
//! a node as from any queue, or as cascaded consumers
//! (`cascade = true` in their config, see the README) that record their position on
//! a node of their own and follow their node's provider.

pub mod admin;
pub(crate) mod consumer;
pub mod worker;

pub use admin::{Admin, MemberStatus};
pub use consumer::install as install_consumer;
pub use worker::{Worker, WorkerConfig, WorkerRound};
