//! The cascade worker: the process that keeps one node of a cascaded queue
//! (`pgq_node`), as Skytools' `CascadedWorker` does, so it can take that
//! worker's place on a node of a cascade made by Londiste or Skytools.
//!
//! - On a **branch**, a round takes the next batch of the node's provider and
//!   copies its events into the node's queue with the same event ids
//!   ([`pgq::relay_batch`], binary COPY), inserts the provider's tick with the
//!   applies the cascade's own events (`pgq.location-info`,
//!   `pgq.unregister-location`, `pgq.global-watermark`) and records the tick
//!   as the worker's completed one: all in one transaction of the node. Then
//!   it inserts the provider's tick with the same tick id, time and event
//!   sequence (in a transaction of its own: a tick's snapshot counts only
//!   committed transactions, so the events must be committed before their
//!   tick is made). Only then is the batch finished on the provider. A crash
//!   anywhere between is found by the next round (the node completed the
//!   batch's tick already; its tick is made if missing) and the batch is
//!   finished without copying it again: exactly once.
//! - On a **leaf**, the same without copying events and ticks.
//! - On the **root**, there is nothing to copy: every `global_wm_period` the
//!   worker publishes the global watermark (the lowest position of every
//!   node below, `pgq_node.set_global_watermark`), which also sends it down
//!   the cascade as an event, so branches can drop what every node passed.
//! - Every node below the root reports its own watermark to its provider
//!   every `local_wm_period` (`pgq_node.set_subscriber_watermark`).
//!
//! The worker honours pause (`pgq_node.set_consumer_paused`) and follows a
//! provider change made on its node (`change-provider`, switchover):
//! batches are taken from whichever node the node's state names, from the
//! position the node completed.
//!
//! Two workers started on one node by mistake cannot both copy a batch: a
//! round locks the worker's state row of the node first and checks the
//! position there, so the second one waits and then finds the batch done.

use std::time::Duration;

use pgq::node::{self, NodeType};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::config::ConnString;
use crate::error::{Error, Result};
use crate::failpoint::crash_point;
use crate::net::connect::{connect, Database};

/// What a [`Worker`] needs to know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The cascaded queue.
    pub queue: String,
    /// The node's database (the one this worker keeps).
    pub node_db: ConnString,
    /// How often the root publishes the global watermark.
    pub global_wm_period: Duration,
    /// How often a node below the root reports its watermark to its provider.
    pub local_wm_period: Duration,
    /// The `application_name` of the worker's connections.
    pub application_name: String,
}

impl WorkerConfig {
    /// A config with Skytools' periods shortened for prompt maintenance: the
    /// global watermark every 60 s, the local one every 60 s.
    pub fn new(queue: impl Into<String>, node_db: impl Into<ConnString>) -> WorkerConfig {
        WorkerConfig {
            queue: queue.into(),
            node_db: node_db.into(),
            global_wm_period: Duration::from_secs(60),
            local_wm_period: Duration::from_secs(60),
            application_name: "pgq-cascade worker".into(),
        }
    }
}

/// What one round of a [`Worker`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerRound {
    /// The provider had no batch.
    Idle,
    /// The worker is paused on its node.
    Paused,
    /// The node is the root: nothing to copy (the global watermark was
    /// published when due).
    Root,
    /// A batch was copied (or, on a leaf, followed) and finished.
    Copied {
        /// The batch on the provider.
        batch_id: i64,
        /// The tick it ends at, now the node's.
        tick_id: i64,
        /// How many events were copied.
        events: u64,
    },
    /// The node had completed the batch already (a crash after its commit):
    /// the batch was only finished on the provider.
    AlreadyDone {
        /// The batch on the provider.
        batch_id: i64,
        /// Its end tick.
        tick_id: i64,
    },
}

/// The worker of one node; [`Worker::round`] is one step of its loop.
pub struct Worker {
    config: WorkerConfig,
    node: Client,
    /// The provider's location and a connection to it.
    provider: Option<(String, Client)>,
    global_wm_at: Option<Instant>,
    local_wm_at: Option<Instant>,
}

impl Worker {
    /// Connects to the node and checks that it is a node of the queue.
    pub async fn connect(config: WorkerConfig) -> Result<Worker> {
        let node = connect(&config.node_db, &config.application_name, Database::Node).await?;
        node::get_node_info(&node, &config.queue).await?;
        Ok(Worker {
            config,
            node,
            provider: None,
            global_wm_at: None,
            local_wm_at: None,
        })
    }

    /// The connection to the node.
    pub fn node_db(&self) -> &Client {
        &self.node
    }

    /// True when a connection was lost: call [`Worker::reconnect`].
    pub fn is_broken(&self) -> bool {
        self.node.is_closed() || self.provider.as_ref().is_some_and(|(_, p)| p.is_closed())
    }

    /// Connects again to what was lost. The round in flight was rolled back
    /// with its connection and is done again.
    pub async fn reconnect(&mut self) -> Result<()> {
        if self.node.is_closed() {
            self.node = connect(&self.config.node_db, &self.config.application_name, Database::Node).await?;
        }
        if self.provider.as_ref().is_some_and(|(_, p)| p.is_closed()) {
            self.provider = None;
        }
        Ok(())
    }

    /// Processes everything there is; returns how many batches were copied.
    pub async fn catch_up(&mut self) -> Result<u64> {
        let mut n = 0;
        loop {
            match self.round().await? {
                WorkerRound::Copied { .. } | WorkerRound::AlreadyDone { .. } => n += 1,
                _ => return Ok(n),
            }
        }
    }

    /// One round: reads the node's state, and copies the provider's next
    /// batch (branch), follows it (leaf) or publishes the global watermark
    /// (root).
    pub async fn round(&mut self) -> Result<WorkerRound> {
        let queue = self.config.queue.clone();
        let st = node::get_worker_state(&self.node, &queue).await?;
        if let Some(combined) = &st.combined_queue {
            return Err(Error::Cascade {
                queue,
                node: st.node_name,
                problem: format!(
                    "the node is a merge leaf (combined queue {combined:?}), which this worker does not keep; \
                     run Londiste's worker there"
                ),
            });
        }
        if !st.uptodate {
            node::set_consumer_uptodate(&self.node, &queue, &st.worker_name, true).await?;
        }
        if st.paused {
            return Ok(WorkerRound::Paused);
        }
        if st.node_type == NodeType::Root {
            if due(&mut self.global_wm_at, self.config.global_wm_period) {
                let reply = node::set_global_watermark(&self.node, &queue, None).await?;
                log::debug!("published the global watermark: {}", reply.note);
            }
            return Ok(WorkerRound::Root);
        }
        let provider = self.provider_for(&st.provider_location).await?;
        let Some(batch_id) = pgq::next_batch(provider, &queue, &st.worker_name).await? else {
            self.publish_local_watermark(&st, None).await;
            return Ok(WorkerRound::Idle);
        };
        let info = pgq::get_batch_info(provider, batch_id)
            .await?
            .ok_or_else(|| Error::Cascade {
                queue: queue.clone(),
                node: st.node_name.clone(),
                problem: format!("batch {batch_id} vanished from the provider while it was read"),
            })?;
        let done = self.copy(&st, batch_id, &info).await?;
        crash_point("cascade-after-node-commit");
        if st.node_type == NodeType::Branch {
            self.tick(&st, &info).await?;
        }
        crash_point("cascade-after-tick");
        let provider = self.provider_for(&st.provider_location).await?;
        pgq::finish_batch(provider, batch_id).await?;
        self.publish_local_watermark(&st, Some(info.tick_id)).await;
        Ok(match done {
            Some(events) => WorkerRound::Copied {
                batch_id,
                tick_id: info.tick_id,
                events,
            },
            None => WorkerRound::AlreadyDone {
                batch_id,
                tick_id: info.tick_id,
            },
        })
    }

    /// In one transaction of the node: checks the position, copies the
    /// events (branch), applies the cascade's events, inserts the tick
    /// (branch) and records it completed. `None` when the node had completed
    /// the batch already.
    async fn copy(&mut self, st: &node::WorkerState, batch_id: i64, info: &pgq::BatchInfo) -> Result<Option<u64>> {
        let queue = &self.config.queue;
        let db = |source| Error::NodeDb {
            which: "node database",
            queue: queue.clone(),
            source,
        };
        let Some((_, provider)) = &self.provider else {
            return Err(Error::Cascade {
                queue: queue.clone(),
                node: st.node_name.clone(),
                problem: "no provider connection".into(),
            });
        };
        let tx = self.node.transaction().await.map_err(db)?;
        // The worker's position, locked: a second worker on this node waits
        // here, then finds the batch done.
        let completed: i64 = tx
            .query_one(
                "select last_tick_id from pgq_node.local_state where queue_name = $1 and consumer_name = $2 for update",
                &[queue, &st.worker_name],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if completed == info.tick_id {
            log::info!(
                "batch {batch_id} (ticks {}..{}) was copied already; finishing it on the provider",
                info.prev_tick_id,
                info.tick_id
            );
            return Ok(None);
        }
        if completed != info.prev_tick_id {
            return Err(Error::Cascade {
                queue: queue.clone(),
                node: st.node_name.clone(),
                problem: format!(
                    "lost position: the provider's batch is ticks {}..{}, the node completed tick {completed}; \
                     the node's worker must be registered on the provider at the node's tick \
                     (pgq-cascade change-provider, or re-create the node)",
                    info.prev_tick_id, info.tick_id
                ),
            });
        }
        let branch = st.node_type == NodeType::Branch;
        let (events, cascade_events) = if branch {
            // A branch's queue takes events only from a replica session.
            tx.batch_execute("set local session_replication_role = replica")
                .await
                .map_err(db)?;
            let relayed = pgq::relay_batch(provider, tx.client(), queue, batch_id).await?;
            (relayed.events, relayed.cascade_events)
        } else {
            (0, cascade_events_of(provider, queue, batch_id).await?)
        };
        for ev in &cascade_events {
            apply(&tx, queue, st, ev).await?;
        }
        node::set_consumer_completed(&tx, queue, &st.worker_name, info.tick_id).await?;
        crash_point("cascade-before-node-commit");
        tx.commit().await.map_err(db)?;
        log::debug!(
            "batch {batch_id} (ticks {}..{}): {events} events copied",
            info.prev_tick_id,
            info.tick_id
        );
        Ok(Some(events))
    }

    /// Inserts the batch's tick into the node's queue, unless it is there,
    /// in a transaction of its own after the one that copied the batch's
    /// events: a tick's snapshot counts only transactions that have
    /// committed, so the events belong to this tick, not the next one. A
    /// crash between the two leaves the node with the batch completed and
    /// its tick missing, which the next round finds here and makes good.
    async fn tick(&self, st: &node::WorkerState, info: &pgq::BatchInfo) -> Result<()> {
        let queue = &self.config.queue;
        let last: Option<i64> = self
            .node
            .query_one(
                "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
                 where q.queue_name = $1",
                &[queue],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|source| Error::NodeDb {
                which: "node database",
                queue: queue.clone(),
                source,
            })?;
        if last == Some(info.tick_id) {
            return Ok(());
        }
        if last != Some(info.prev_tick_id) {
            return Err(Error::Cascade {
                queue: queue.clone(),
                node: st.node_name.clone(),
                problem: format!(
                    "the node's last tick is {last:?}, but the batch being copied is ticks {}..{}",
                    info.prev_tick_id, info.tick_id
                ),
            });
        }
        pgq::ticker_external(&self.node, queue, info.tick_id, info.batch_end, info.seq_end).await?;
        Ok(())
    }

    /// The connection to the provider at `location`, made or made again when
    /// the location changed.
    async fn provider_for(&mut self, location: &str) -> Result<&Client> {
        let fresh = match &self.provider {
            Some((loc, c)) => loc != location || c.is_closed(),
            None => true,
        };
        if fresh {
            let dsn = ConnString::new(location);
            let client = connect(&dsn, &self.config.application_name, Database::Provider).await?;
            self.provider = Some((location.to_string(), client));
        }
        match &self.provider {
            Some((_, c)) => Ok(c),
            None => unreachable_provider(&self.config.queue),
        }
    }

    /// Reports the node's watermark to its provider, when due: the lowest
    /// position below this node, but not past the tick just completed
    /// (`tick`). A failure is logged only: the next report makes up for it.
    async fn publish_local_watermark(&mut self, st: &node::WorkerState, tick: Option<i64>) {
        if !due(&mut self.local_wm_at, self.config.local_wm_period) {
            return;
        }
        let queue = self.config.queue.clone();
        let info = match node::get_node_info(&self.node, &queue).await {
            Ok(info) => info,
            Err(e) => {
                log::warn!("cannot read the node's watermark: {}", pgq_daemon::error_chain(&e));
                return;
            }
        };
        let Some(mut wm) = info.local_watermark else {
            return;
        };
        if let Some(t) = tick {
            wm = wm.min(t);
        }
        let Some((_, provider)) = &self.provider else {
            return;
        };
        match node::set_subscriber_watermark(provider, &queue, &st.node_name, wm).await {
            Ok(r) => log::debug!("reported watermark {wm} to the provider: {}", r.note),
            Err(e) => log::warn!(
                "cannot report the node's watermark to the provider: {}",
                pgq_daemon::error_chain(&e)
            ),
        }
    }
}

fn unreachable_provider<T>(queue: &str) -> Result<T> {
    Err(Error::Cascade {
        queue: queue.to_string(),
        node: String::new(),
        problem: "no provider connection".into(),
    })
}

/// Whether a periodic job is due; marks it done now if so.
fn due(at: &mut Option<Instant>, period: Duration) -> bool {
    if at.is_some_and(|t| t.elapsed() < period) {
        return false;
    }
    *at = Some(Instant::now());
    true
}

/// The cascade's own events of a batch, read on the provider (a leaf copies
/// nothing else).
async fn cascade_events_of(provider: &Client, queue: &str, batch_id: i64) -> Result<Vec<pgq::CascadeEvent>> {
    let rows = provider
        .query(
            "select ev_id, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3 \
             from pgq.get_batch_events($1) where ev_type like 'pgq.%' order by ev_id",
            &[&batch_id],
        )
        .await
        .map_err(|source| Error::NodeDb {
            which: "provider node",
            queue: queue.to_string(),
            source,
        })?;
    rows.iter()
        .map(|r| {
            Ok(pgq::CascadeEvent {
                ev_id: r.try_get(0)?,
                ev_type: r.try_get(1)?,
                ev_data: r.try_get(2)?,
                ev_extra1: r.try_get(3)?,
                ev_extra2: r.try_get(4)?,
                ev_extra3: r.try_get(5)?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(|source| Error::UnexpectedRow {
            function: "pgq.get_batch_events",
            source,
        })
}

/// Applies one of the cascade's own events to the node, in the copying
/// transaction, as Skytools' worker does.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    queue: &str,
    st: &node::WorkerState,
    ev: &pgq::CascadeEvent,
) -> Result<()> {
    let bad = |problem: String| Error::Cascade {
        queue: queue.to_string(),
        node: st.node_name.clone(),
        problem,
    };
    if ev.ev_type != "pgq.tick-id" && ev.ev_extra1.as_deref() != Some(queue) {
        return Err(bad(format!(
            "event {} ({}) is for queue {:?}, not this one",
            ev.ev_id, ev.ev_type, ev.ev_extra1
        )));
    }
    let data = ev.ev_data.as_deref().unwrap_or_default();
    match ev.ev_type.as_str() {
        "pgq.location-info" => {
            let dead = ev.ev_extra3.as_deref() == Some("true");
            match ev.ev_extra2.as_deref() {
                Some(loc) => node::register_location(tx, queue, data, loc, dead).await?,
                None => node::set_location_dead(tx, queue, data, dead).await?,
            };
        }
        "pgq.unregister-location" => match node::unregister_location(tx, queue, data).await {
            // The node's own location or its provider's stays (Skytools'
            // worker ignores the refusal too).
            Err(e) if e.node_code().is_some() => log::info!("{e}"),
            other => {
                other?;
            }
        },
        "pgq.global-watermark" => {
            if st.node_type == NodeType::Branch {
                let tick: i64 = data
                    .parse()
                    .map_err(|_| bad(format!("event {}: global watermark {data:?} is no tick id", ev.ev_id)))?;
                node::set_global_watermark(tx, queue, Some(tick)).await?;
            }
        }
        // Partition ticks concern merge leaves only.
        "pgq.tick-id" => {}
        other => return Err(bad(format!("event {}: unknown cascade event type {other:?}", ev.ev_id))),
    }
    Ok(())
}
