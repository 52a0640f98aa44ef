//! The cascaded consumer: a [`Consumer`](crate::Consumer) whose config says
//! `cascade = true`. Its `db` is its **target node** (a node of the
//! cascade, where its state lives in `pgq_node.local_state`); its batches
//! come from the node its state names as provider. The batch loop runs it
//! as a remote consumer whose "queue database" is the provider and whose
//! "remote database" is the target node: the handler's writes (`cx.tx()`)
//! and the completed tick commit together on the target node, then the
//! batch is finished on the provider.
//!
//! Each round first reads the consumer's state on the target node: paused,
//! it takes no batch; its provider changed (`change-provider`, a
//! switchover), it reads from the new one from then on, at the tick it
//! completed (which the change registered it at there). The completed tick
//! moves only from the batch's start tick
//! (`pgq_consumer.complete_cascade_batch`), so a batch commits once,
//! whatever two processes of the same consumer do.

use pgq::node::{self, ConsumerState, NodeType};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

use crate::config::{Config, ConnString};
use crate::error::{Error, Result};
use crate::net::connect::{connect, Database};

/// The config the batch loop runs a cascaded consumer with: `db` is the
/// provider (where its batches come from), `remote_db` its target node.
pub(crate) fn view(file: &Config, provider_location: &str) -> Config {
    let mut c = file.clone();
    c.remote_db = Some(file.db.clone());
    c.db = ConnString::new(provider_location).with_net_timeout(file.db.net_timeout());
    c
}

/// Reads the consumer's state on its target node, and marks it as seen.
pub(crate) async fn refresh(target: &Client, queue: &str, consumer: &str) -> Result<ConsumerState> {
    let st = node::get_consumer_state(target, queue, consumer).await?;
    if !st.uptodate {
        node::set_consumer_uptodate(target, queue, consumer, true).await?;
    }
    Ok(st)
}

/// The consumer's state on its target node (`file.db`), read once.
pub(crate) async fn state(file: &Config, app: &str) -> Result<ConsumerState> {
    let target = connect(&file.db, app, Database::Node).await?;
    refresh(&target, &file.queue, &file.consumer).await
}

/// Records in the batch's transaction on the target node that the consumer
/// completed the batch `prev_tick..tick`; fails (and so rolls that
/// transaction back) unless the consumer was at `prev_tick`. Sent in one
/// round trip when first polled.
pub(crate) async fn complete(
    target: &impl GenericClient,
    queue: &str,
    consumer: &str,
    prev_tick: i64,
    tick: i64,
) -> Result<()> {
    target
        .execute_typed(
            "select pgq_consumer.complete_cascade_batch($1, $2, $3, $4)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&prev_tick, Type::INT8),
                (&tick, Type::INT8),
            ],
        )
        .await
        .map_err(|source| Error::Consumer {
            function: "pgq_consumer.complete_cascade_batch",
            queue: queue.to_owned(),
            consumer: consumer.to_owned(),
            source,
        })?;
    Ok(())
}

/// `install` for a cascaded consumer (what the consumer's `install`
/// command does when its config says `cascade = true`): the framework's SQL on the target
/// node and the provider, the consumer registered on the provider and, at
/// the same tick, on the target node. The provider is the target node
/// itself when it holds the queue (root, branch), else (leaf) the node its
/// worker reads from.
pub async fn install(file: &Config, app: &str) -> Result<()> {
    let (queue, consumer) = (&file.queue, &file.consumer);
    let target = connect(&file.db, app, Database::Node).await?;
    let version = crate::schema::install(&target).await?;
    pgq_daemon::outln!("framework schema pgq_consumer is at version {version} on the target node");
    let info = node::get_node_info(&target, queue).await?;
    let registered = match node::get_consumer_state(&target, queue, consumer).await {
        Ok(st) => Some(st),
        Err(e) if e.node_code() == Some(404) => None,
        Err(e) => return Err(e.into()),
    };
    let (provider_node, provider_location) = match &registered {
        Some(st) => (st.provider_node.clone(), Some(st.provider_location.clone())),
        None if info.node_type == NodeType::Leaf => (
            info.provider_node.clone().unwrap_or_default(),
            info.provider_location.clone(),
        ),
        None => (info.node_name.clone(), None),
    };
    let provider = match provider_location {
        Some(loc) => connect(&ConnString::new(loc), app, Database::Provider).await?,
        None => connect(&file.db, app, Database::Provider).await?,
    };
    let version = crate::schema::install(&provider).await?;
    pgq_daemon::outln!("framework schema pgq_consumer is at version {version} on provider node {provider_node:?}");
    if let Some(st) = registered {
        pgq::register_consumer_at(&provider, queue, consumer, st.completed_tick).await?;
        pgq_daemon::outln!(
            "cascaded consumer {consumer:?} was registered on node {:?} already, reading from {provider_node:?} at tick {}",
            info.node_name,
            st.completed_tick
        );
        return Ok(());
    }
    pgq::register_consumer(&provider, queue, consumer).await?;
    let at = pgq::get_consumer_info(&provider, queue, consumer)
        .await?
        .and_then(|i| i.last_tick)
        .ok_or_else(|| Error::Cascade {
            queue: queue.clone(),
            node: provider_node.clone(),
            problem: format!("consumer {consumer:?} has no position on the provider after registering"),
        })?;
    node::register_consumer(&target, queue, consumer, &provider_node, at).await?;
    pgq_daemon::outln!(
        "cascaded consumer {consumer:?} registered on node {:?}, reading from {provider_node:?} from tick {at}",
        info.node_name
    );
    Ok(())
}
