//! Cascaded queues: every function of `pgq_node` 3.5, the extension that
//! spreads one PgQ queue over several databases (a root where events are
//! produced and ticked, branches holding a full copy with the same event and
//! tick ids, leaves that only consume).
//!
//! Most `pgq_node` functions answer with a status code and a note instead of
//! raising an error (`ret_code`, `ret_note`: below 300 is success, as
//! Skytools reads them). Here a code of 300 or more is
//! [`crate::Error::NodeRefused`], carrying the code and
//! note; a success returns the [`NodeReply`] (some successes say something:
//! 201 "already registered", 100 "ignored on a leaf").
//!
//! ```no_run
//! # async fn demo(root: &tokio_postgres::Client) -> pgq::Result<()> {
//! use pgq::node::{self, NodeType};
//! node::register_location(root, "orders", "n1", "host=db1 dbname=app", false).await?;
//! node::create_node(root, "orders", NodeType::Root, "n1", "n1_worker", None, None, None).await?;
//! let info = node::get_node_info(root, "orders").await?;
//! assert_eq!(info.node_type, NodeType::Root);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;

use tokio_postgres::{GenericClient, Row};

use crate::call::{map_rows, scalar, Params};
use crate::error::{on_consumer, on_queue, Error, Result};

/// The consumer name `pgq_node` keeps the global watermark under, on root
/// and branch queues.
pub const GLOBAL_WATERMARK_CONSUMER: &str = ".global_watermark";

/// The consumer name a provider keeps a subscriber node's watermark under:
/// `.<node>.watermark`.
pub fn subscriber_watermark_consumer(node: &str) -> String {
    format!(".{node}.watermark")
}

/// What a node is in its cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// Events are produced and ticked here.
    Root,
    /// Holds a full copy of the queue (same event and tick ids); can serve
    /// other nodes and become root.
    Branch,
    /// Consumes only; holds no copy of the queue.
    Leaf,
}

impl NodeType {
    /// The name `pgq_node` uses: `root`, `branch` or `leaf`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Root => "root",
            NodeType::Branch => "branch",
            NodeType::Leaf => "leaf",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeType {
    type Err = Error;
    fn from_str(s: &str) -> Result<NodeType> {
        match s {
            "root" => Ok(NodeType::Root),
            "branch" => Ok(NodeType::Branch),
            "leaf" => Ok(NodeType::Leaf),
            other => Err(Error::InvalidArgument {
                what: "node type",
                problem: format!("{other:?} is none of root, branch, leaf"),
            }),
        }
    }
}

/// A successful answer of a `pgq_node` function: its status code (below 300)
/// and note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReply {
    /// `ret_code`: 200 done, 100 nothing to do or information, 201 already so.
    pub code: i32,
    /// `ret_note`, the function's own words.
    pub note: String,
}

/// Reads `ret_code` and `ret_note` of `row`; a code of 300 or more is an error.
fn reply_of(row: &Row, function: &'static str, context: &str) -> Result<NodeReply> {
    let code: i32 = row.try_get("ret_code").map_err(Error::row(function, context))?;
    let note: Option<String> = row.try_get("ret_note").map_err(Error::row(function, context))?;
    let note = note.unwrap_or_default();
    if code >= 300 {
        return Err(Error::NodeRefused {
            function,
            context: context.to_string(),
            code,
            note,
        });
    }
    Ok(NodeReply { code, note })
}

/// Runs a `pgq_node` function returning one `(ret_code, ret_note, ...)` row.
async fn call_row(
    client: &impl GenericClient,
    function: &'static str,
    context: String,
    sql: &str,
    params: Params<'_>,
) -> Result<(NodeReply, Row)> {
    let row = client
        .query_one(sql, params)
        .await
        .map_err(Error::sql(function, context.clone()))?;
    let reply = reply_of(&row, function, &context)?;
    Ok((reply, row))
}

/// Runs a `pgq_node` function returning only `(ret_code, ret_note)`.
async fn call(
    client: &impl GenericClient,
    function: &'static str,
    context: String,
    sql: &str,
    params: Params<'_>,
) -> Result<NodeReply> {
    call_row(client, function, context, sql, params).await.map(|(r, _)| r)
}

fn on_node(queue: &str, node: &str) -> String {
    format!("queue {queue:?}, node {node:?}")
}

/// Brings an older `pgq_node` schema's tables up to date
/// (`pgq_node.upgrade_schema`); returns how many fixes were applied.
pub async fn upgrade_schema(client: &impl GenericClient) -> Result<i32> {
    scalar(
        client,
        "pgq_node.upgrade_schema",
        String::new(),
        "select pgq_node.upgrade_schema()",
        &[],
    )
    .await
}

/// The installed `pgq_node` version (`pgq_node.version`), e.g. `3.5`.
pub async fn version(client: &impl GenericClient) -> Result<String> {
    scalar(
        client,
        "pgq_node.version",
        String::new(),
        "select pgq_node.version()",
        &[],
    )
    .await
}

/// Adds a node's location (its connection string) to the cascade's member
/// list here, or updates it (`pgq_node.register_location`). On the root it
/// also sends a `pgq.location-info` event down the cascade.
pub async fn register_location(
    client: &impl GenericClient,
    queue: &str,
    node: &str,
    location: &str,
    dead: bool,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.register_location",
        on_node(queue, node),
        "select * from pgq_node.register_location($1, $2, $3, $4)",
        &[&queue, &node, &location, &dead],
    )
    .await
}

/// Marks a known node dead or alive, keeping its location
/// (`pgq_node.register_location` with a NULL location).
pub async fn set_location_dead(client: &impl GenericClient, queue: &str, node: &str, dead: bool) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.register_location",
        on_node(queue, node),
        "select * from pgq_node.register_location($1, $2, null, $3)",
        &[&queue, &node, &dead],
    )
    .await
}

/// Drops a node's location (`pgq_node.unregister_location`); refused (403)
/// for the node itself and its provider. On the root it also sends a
/// `pgq.unregister-location` event down the cascade.
pub async fn unregister_location(client: &impl GenericClient, queue: &str, node: &str) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.unregister_location",
        on_node(queue, node),
        "select * from pgq_node.unregister_location($1, $2)",
        &[&queue, &node],
    )
    .await
}

/// A member of a cascade, a row of `pgq_node.get_queue_locations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The node's name.
    pub node_name: String,
    /// Its connection string.
    pub node_location: String,
    /// Whether it was tagged dead.
    pub dead: bool,
}

/// Every member this node knows of (`pgq_node.get_queue_locations`).
pub async fn get_queue_locations(client: &impl GenericClient, queue: &str) -> Result<Vec<Location>> {
    map_rows(
        client,
        "pgq_node.get_queue_locations",
        on_queue(queue),
        "select node_name, node_location, dead from pgq_node.get_queue_locations($1)",
        &[&queue],
        |r| {
            Ok(Location {
                node_name: r.try_get(0)?,
                node_location: r.try_get(1)?,
                dead: r.try_get(2)?,
            })
        },
    )
    .await
}

/// Makes this database a node of the cascade (`pgq_node.create_node`): a
/// root creates the queue; a branch creates it with external ticks and
/// inserts disabled, starting at `global_watermark`; a leaf creates none.
/// The worker is registered on the node, reading from `provider` (the node
/// itself on a root). `combined_queue` makes a merge leaf.
#[allow(clippy::too_many_arguments)]
pub async fn create_node(
    client: &impl GenericClient,
    queue: &str,
    node_type: NodeType,
    node: &str,
    worker: &str,
    provider: Option<&str>,
    global_watermark: Option<i64>,
    combined_queue: Option<&str>,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.create_node",
        on_node(queue, node),
        "select * from pgq_node.create_node($1, $2, $3, $4, $5, $6, $7)",
        &[
            &queue,
            &node_type.as_str(),
            &node,
            &worker,
            &provider,
            &global_watermark,
            &combined_queue,
        ],
    )
    .await
}

/// Removes a node (`pgq_node.drop_node`): called on the node itself, drops
/// its queue and state; called elsewhere, drops what that database keeps of
/// the node (its subscription, its location). Refused (405) on the node's
/// provider's own entry.
pub async fn drop_node(client: &impl GenericClient, queue: &str, node: &str) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.drop_node",
        on_node(queue, node),
        "select * from pgq_node.drop_node($1, $2)",
        &[&queue, &node],
    )
    .await
}

/// What a node is and where its worker stands, from `pgq_node.get_node_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Root, branch or leaf.
    pub node_type: NodeType,
    /// This node's name.
    pub node_name: String,
    /// The tick every node has passed (root and branch).
    pub global_watermark: Option<i64>,
    /// The lowest position of this node's consumers and subscribers (root,
    /// branch), or the worker's position (leaf).
    pub local_watermark: Option<i64>,
    /// The worker's provider node.
    pub provider_node: Option<String>,
    /// The provider's connection string.
    pub provider_location: Option<String>,
    /// A merge leaf's combined queue.
    pub combined_queue: Option<String>,
    /// The combined queue's node type.
    pub combined_type: Option<String>,
    /// The consumer name of the node's worker.
    pub worker_name: Option<String>,
    /// Whether the worker was paused.
    pub worker_paused: Option<bool>,
    /// Whether the worker has seen the last change of its state.
    pub worker_uptodate: Option<bool>,
    /// The worker's last completed tick (on a root: the queue's last tick).
    pub worker_last_tick: Option<i64>,
    /// URL-encoded attributes for the worker (`sync_watermark`, ...).
    pub node_attrs: Option<String>,
    /// The queues that use this one as their combined queue.
    pub target_for: Option<Vec<String>>,
}

/// This node's type, name, watermarks and worker (`pgq_node.get_node_info`);
/// [`Error::NodeRefused`] with code 404 when the queue has no node here.
pub async fn get_node_info(client: &impl GenericClient, queue: &str) -> Result<NodeInfo> {
    const F: &str = "pgq_node.get_node_info";
    let context = on_queue(queue);
    let (_, r) = call_row(
        client,
        F,
        context.clone(),
        "select * from pgq_node.get_node_info($1)",
        &[&queue],
    )
    .await?;
    let row = |e| Error::row(F, context.clone())(e);
    let node_type: String = r.try_get("node_type").map_err(row)?;
    Ok(NodeInfo {
        node_type: node_type.parse()?,
        node_name: r.try_get("node_name").map_err(row)?,
        global_watermark: r.try_get("global_watermark").map_err(row)?,
        local_watermark: r.try_get("local_watermark").map_err(row)?,
        provider_node: r.try_get("provider_node").map_err(row)?,
        provider_location: r.try_get("provider_location").map_err(row)?,
        combined_queue: r.try_get("combined_queue").map_err(row)?,
        combined_type: r.try_get("combined_type").map_err(row)?,
        worker_name: r.try_get("worker_name").map_err(row)?,
        worker_paused: r.try_get("worker_paused").map_err(row)?,
        worker_uptodate: r.try_get("worker_uptodate").map_err(row)?,
        worker_last_tick: r.try_get("worker_last_tick").map_err(row)?,
        node_attrs: r.try_get("node_attrs").map_err(row)?,
        target_for: r.try_get("target_for").map_err(row)?,
    })
}

/// Whether this node is the root (`pgq_node.is_root_node`); an error when
/// the queue has no node here.
pub async fn is_root_node(client: &impl GenericClient, queue: &str) -> Result<bool> {
    scalar(
        client,
        "pgq_node.is_root_node",
        on_queue(queue),
        "select pgq_node.is_root_node($1)",
        &[&queue],
    )
    .await
}

/// Whether this node is a leaf (`pgq_node.is_leaf_node`); an error when
/// the queue has no node here.
pub async fn is_leaf_node(client: &impl GenericClient, queue: &str) -> Result<bool> {
    scalar(
        client,
        "pgq_node.is_leaf_node",
        on_queue(queue),
        "select pgq_node.is_leaf_node($1)",
        &[&queue],
    )
    .await
}

/// A node that reads from this one, a row of `pgq_node.get_subscriber_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberInfo {
    /// The subscriber node.
    pub node_name: String,
    /// Its worker's consumer name here.
    pub worker_name: String,
    /// The watermark it last published here.
    pub node_watermark: Option<i64>,
}

/// The nodes subscribed to this one (`pgq_node.get_subscriber_info`).
pub async fn get_subscriber_info(client: &impl GenericClient, queue: &str) -> Result<Vec<SubscriberInfo>> {
    map_rows(
        client,
        "pgq_node.get_subscriber_info",
        on_queue(queue),
        "select node_name, worker_name, node_watermark from pgq_node.get_subscriber_info($1)",
        &[&queue],
        |r| {
            Ok(SubscriberInfo {
                node_name: r.try_get(0)?,
                worker_name: r.try_get(1)?,
                node_watermark: r.try_get(2)?,
            })
        },
    )
    .await
}

/// A cascaded consumer of this node, a row of `pgq_node.get_consumer_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CascadedConsumerInfo {
    /// The consumer.
    pub consumer_name: String,
    /// The node it reads from.
    pub provider_node: String,
    /// The last tick it committed here.
    pub last_tick_id: i64,
    /// Whether it was paused.
    pub paused: bool,
    /// Whether it has seen the last change of its state.
    pub uptodate: bool,
    /// Its last error, if it stored one.
    pub cur_error: Option<String>,
}

/// Every cascaded consumer (workers included) whose state this node keeps
/// (`pgq_node.get_consumer_info`).
pub async fn get_consumer_info(client: &impl GenericClient, queue: &str) -> Result<Vec<CascadedConsumerInfo>> {
    map_rows(
        client,
        "pgq_node.get_consumer_info",
        on_queue(queue),
        "select consumer_name, provider_node, last_tick_id, paused, uptodate, cur_error \
         from pgq_node.get_consumer_info($1)",
        &[&queue],
        |r| {
            Ok(CascadedConsumerInfo {
                consumer_name: r.try_get(0)?,
                provider_node: r.try_get(1)?,
                last_tick_id: r.try_get(2)?,
                paused: r.try_get(3)?,
                uptodate: r.try_get(4)?,
                cur_error: r.try_get(5)?,
            })
        },
    )
    .await
}

/// One step of turning the root into a branch (`pgq_node.demote_root`):
/// 1 disables inserts and the local ticker, 2 inserts a last tick (returned),
/// 3 makes the node a branch reading from `new_provider`, at its last tick
/// (returned). Returns the reply and the step's last tick.
pub async fn demote_root(
    client: &impl GenericClient,
    queue: &str,
    step: i32,
    new_provider: &str,
) -> Result<(NodeReply, Option<i64>)> {
    const F: &str = "pgq_node.demote_root";
    let context = format!("{}, step {step}", on_queue(queue));
    let (reply, row) = call_row(
        client,
        F,
        context.clone(),
        "select * from pgq_node.demote_root($1, $2, $3)",
        &[&queue, &step, &new_provider],
    )
    .await?;
    let last = row.try_get("last_tick").map_err(Error::row(F, context))?;
    Ok((reply, last))
}

/// Makes this branch the root (`pgq_node.promote_branch`): inserts and the
/// local ticker on, the tick sequence past the last tick, the worker
/// reading from the node itself.
pub async fn promote_branch(client: &impl GenericClient, queue: &str) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.promote_branch",
        on_queue(queue),
        "select * from pgq_node.promote_branch($1)",
        &[&queue],
    )
    .await
}

/// Sets the node's URL-encoded attributes for its worker
/// (`pgq_node.set_node_attrs`).
pub async fn set_node_attrs(client: &impl GenericClient, queue: &str, attrs: &str) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_node_attrs",
        on_queue(queue),
        "select * from pgq_node.set_node_attrs($1, $2)",
        &[&queue, &attrs],
    )
    .await
}

/// On a provider, subscribes a node to it (`pgq_node.register_subscriber`):
/// registers the node's watermark and its worker as consumers of the queue,
/// the worker at `tick_id` (the global watermark when `None`). Returns the
/// reply and the provider's global watermark.
pub async fn register_subscriber(
    client: &impl GenericClient,
    queue: &str,
    node: &str,
    worker: &str,
    tick_id: Option<i64>,
) -> Result<(NodeReply, Option<i64>)> {
    const F: &str = "pgq_node.register_subscriber";
    let context = on_node(queue, node);
    let (reply, row) = call_row(
        client,
        F,
        context.clone(),
        "select * from pgq_node.register_subscriber($1, $2, $3, $4)",
        &[&queue, &node, &worker, &tick_id],
    )
    .await?;
    let wm = row.try_get("global_watermark").map_err(Error::row(F, context))?;
    Ok((reply, wm))
}

/// On a provider, drops a node's subscription, its worker and watermark
/// consumers (`pgq_node.unregister_subscriber`).
pub async fn unregister_subscriber(client: &impl GenericClient, queue: &str, node: &str) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.unregister_subscriber",
        on_node(queue, node),
        "select * from pgq_node.unregister_subscriber($1, $2)",
        &[&queue, &node],
    )
    .await
}

/// On a provider, moves a subscriber node's watermark forward
/// (`pgq_node.set_subscriber_watermark`); refused (405) backwards, code 100
/// when it is there already.
pub async fn set_subscriber_watermark(
    client: &impl GenericClient,
    queue: &str,
    node: &str,
    watermark: i64,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_subscriber_watermark",
        on_node(queue, node),
        "select * from pgq_node.set_subscriber_watermark($1, $2, $3)",
        &[&queue, &node, &watermark],
    )
    .await
}

/// A node's worker state, from `pgq_node.get_worker_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerState {
    /// Root, branch or leaf.
    pub node_type: NodeType,
    /// This node's name.
    pub node_name: String,
    /// The worker's last completed tick.
    pub completed_tick: i64,
    /// The node the worker reads from.
    pub provider_node: String,
    /// Its connection string.
    pub provider_location: String,
    /// Whether the worker was paused.
    pub paused: bool,
    /// Whether the worker has seen the last change of its state.
    pub uptodate: bool,
    /// The worker's last stored error.
    pub cur_error: Option<String>,
    /// The worker's consumer name.
    pub worker_name: String,
    /// The global watermark (root and branch).
    pub global_watermark: Option<i64>,
    /// The local watermark.
    pub local_watermark: Option<i64>,
    /// The last tick of the local queue (root and branch).
    pub local_queue_top: Option<i64>,
    /// A merge leaf's combined queue.
    pub combined_queue: Option<String>,
    /// The combined queue's node type.
    pub combined_type: Option<String>,
}

/// Everything a node's worker needs for its next round
/// (`pgq_node.get_worker_state`).
pub async fn get_worker_state(client: &impl GenericClient, queue: &str) -> Result<WorkerState> {
    const F: &str = "pgq_node.get_worker_state";
    let context = on_queue(queue);
    let (_, r) = call_row(
        client,
        F,
        context.clone(),
        "select * from pgq_node.get_worker_state($1)",
        &[&queue],
    )
    .await?;
    let row = |e| Error::row(F, context.clone())(e);
    let node_type: String = r.try_get("node_type").map_err(row)?;
    Ok(WorkerState {
        node_type: node_type.parse()?,
        node_name: r.try_get("node_name").map_err(row)?,
        completed_tick: r.try_get("completed_tick").map_err(row)?,
        provider_node: r.try_get("provider_node").map_err(row)?,
        provider_location: r.try_get("provider_location").map_err(row)?,
        paused: r.try_get("paused").map_err(row)?,
        uptodate: r.try_get("uptodate").map_err(row)?,
        cur_error: r.try_get("cur_error").map_err(row)?,
        worker_name: r.try_get("worker_name").map_err(row)?,
        global_watermark: r.try_get("global_watermark").map_err(row)?,
        local_watermark: r.try_get("local_watermark").map_err(row)?,
        local_queue_top: r.try_get("local_queue_top").map_err(row)?,
        combined_queue: r.try_get("combined_queue").map_err(row)?,
        combined_type: r.try_get("combined_type").map_err(row)?,
    })
}

/// Moves the global watermark (`pgq_node.set_global_watermark`). On the
/// root, `None` publishes the local watermark: it is set and sent down the
/// cascade as a `pgq.global-watermark` event. On a branch, to a tick of the
/// local queue (code 200 "Skipping" when there is no such tick); code 100
/// on a leaf.
pub async fn set_global_watermark(
    client: &impl GenericClient,
    queue: &str,
    watermark: Option<i64>,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_global_watermark",
        on_queue(queue),
        "select * from pgq_node.set_global_watermark($1, $2)",
        &[&queue, &watermark],
    )
    .await
}

/// On a merge leaf's combined branch, moves a part queue's worker to a tick
/// that came from the combined root (`pgq_node.set_partition_watermark`).
pub async fn set_partition_watermark(
    client: &impl GenericClient,
    combined_queue: &str,
    part_queue: &str,
    watermark: i64,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_partition_watermark",
        format!("combined queue {combined_queue:?}, part queue {part_queue:?}"),
        "select * from pgq_node.set_partition_watermark($1, $2, $3)",
        &[&combined_queue, &part_queue, &watermark],
    )
    .await
}

/// Registers a cascaded consumer on its target node
/// (`pgq_node.register_consumer`), reading from `provider` from `tick_id`
/// on; code 201 when it was registered already (its provider and tick are
/// then set to these).
pub async fn register_consumer(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    provider: &str,
    tick_id: i64,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.register_consumer",
        on_consumer(queue, consumer),
        "select * from pgq_node.register_consumer($1, $2, $3, $4)",
        &[&queue, &consumer, &provider, &tick_id],
    )
    .await
}

/// Drops a cascaded consumer's state from its target node
/// (`pgq_node.unregister_consumer`).
pub async fn unregister_consumer(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.unregister_consumer",
        on_consumer(queue, consumer),
        "select * from pgq_node.unregister_consumer($1, $2)",
        &[&queue, &consumer],
    )
    .await
}

/// A cascaded consumer's state on its target node, from
/// `pgq_node.get_consumer_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerState {
    /// The target node's type.
    pub node_type: NodeType,
    /// The target node's name.
    pub node_name: String,
    /// The last tick it committed here.
    pub completed_tick: i64,
    /// The node it reads from.
    pub provider_node: String,
    /// Its connection string.
    pub provider_location: String,
    /// Whether it was paused.
    pub paused: bool,
    /// Whether it has seen the last change of its state.
    pub uptodate: bool,
    /// Its last stored error.
    pub cur_error: Option<String>,
}

/// A cascaded consumer's state (`pgq_node.get_consumer_state`).
pub async fn get_consumer_state(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<ConsumerState> {
    const F: &str = "pgq_node.get_consumer_state";
    let context = on_consumer(queue, consumer);
    let (_, r) = call_row(
        client,
        F,
        context.clone(),
        "select * from pgq_node.get_consumer_state($1, $2)",
        &[&queue, &consumer],
    )
    .await?;
    let row = |e| Error::row(F, context.clone())(e);
    let node_type: String = r.try_get("node_type").map_err(row)?;
    Ok(ConsumerState {
        node_type: node_type.parse()?,
        node_name: r.try_get("node_name").map_err(row)?,
        completed_tick: r.try_get("completed_tick").map_err(row)?,
        provider_node: r.try_get("provider_node").map_err(row)?,
        provider_location: r.try_get("provider_location").map_err(row)?,
        paused: r.try_get("paused").map_err(row)?,
        uptodate: r.try_get("uptodate").map_err(row)?,
        cur_error: r.try_get("cur_error").map_err(row)?,
    })
}

/// Points a cascaded consumer at another provider node
/// (`pgq_node.change_consumer_provider`); it is marked not up to date.
pub async fn change_consumer_provider(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    new_provider: &str,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.change_consumer_provider",
        on_consumer(queue, consumer),
        "select * from pgq_node.change_consumer_provider($1, $2, $3)",
        &[&queue, &consumer, &new_provider],
    )
    .await
}

/// Records whether a cascaded consumer has seen its state's last change
/// (`pgq_node.set_consumer_uptodate`).
pub async fn set_consumer_uptodate(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    uptodate: bool,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_consumer_uptodate",
        on_consumer(queue, consumer),
        "select * from pgq_node.set_consumer_uptodate($1, $2, $3)",
        &[&queue, &consumer, &uptodate],
    )
    .await
}

/// Pauses or resumes a cascaded consumer (`pgq_node.set_consumer_paused`);
/// it is marked not up to date until it has seen it.
pub async fn set_consumer_paused(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    paused: bool,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_consumer_paused",
        on_consumer(queue, consumer),
        "select * from pgq_node.set_consumer_paused($1, $2, $3)",
        &[&queue, &consumer, &paused],
    )
    .await
}

/// Records the last tick a cascaded consumer committed on this node
/// (`pgq_node.set_consumer_completed`), in the transaction of its work;
/// clears its stored error.
pub async fn set_consumer_completed(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    tick_id: i64,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_consumer_completed",
        on_consumer(queue, consumer),
        "select * from pgq_node.set_consumer_completed($1, $2, $3)",
        &[&queue, &consumer, &tick_id],
    )
    .await
}

/// Stores (or, with `None`, clears) a cascaded consumer's last error
/// (`pgq_node.set_consumer_error`); code 101 when the consumer is unknown.
pub async fn set_consumer_error(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    error: Option<&str>,
) -> Result<NodeReply> {
    call(
        client,
        "pgq_node.set_consumer_error",
        on_consumer(queue, consumer),
        "select * from pgq_node.set_consumer_error($1, $2, $3)",
        &[&queue, &consumer, &error],
    )
    .await
}

/// On the root, publishes the global watermark when it is five minutes old
/// (`pgq_node.maint_watermark`, what pgqd calls); nothing elsewhere. Returns 0.
pub async fn maint_watermark(client: &impl GenericClient, queue: &str) -> Result<i32> {
    scalar(
        client,
        "pgq_node.maint_watermark",
        on_queue(queue),
        "select pgq_node.maint_watermark($1)",
        &[&queue],
    )
    .await
}
