//! Administration of a cascade, as Skytools' `CascadeAdmin` does it: create
//! nodes, list members and their state, pause and resume workers and
//! consumers, change a provider, switch the root over to a branch, take over
//! from a dead root, tag a node dead, drop a node.
//!
//! An [`Admin`] starts from one node's database; the other nodes are
//! reached through the locations that node knows (`pgq_node.node_location`),
//! as every node of a cascade knows every member.

use std::collections::BTreeMap;
use std::time::Duration;

use pgq::node::{self, Location, NodeInfo, NodeType};
use tokio_postgres::Client;

use crate::config::ConnString;
use crate::error::{Error, Result};
use crate::net::connect::{connect, Database};

/// Administers one cascaded queue, starting from one node.
pub struct Admin {
    queue: String,
    local: Client,
    app: String,
}

/// One member's state, for `status`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MemberStatus {
    /// The node's name.
    pub name: String,
    /// Whether it is tagged dead.
    pub dead: bool,
    /// Its state, when it could be read; otherwise why not.
    pub info: std::result::Result<NodeInfo, String>,
    /// Seconds since the tick its worker last completed was made on the
    /// root, as its provider sees it (none on the root).
    pub lag: Option<f64>,
}

impl MemberStatus {
    /// One line: name, type, provider, worker position, lag, flags.
    pub fn line(&self) -> String {
        match &self.info {
            Err(e) => format!("{}: {}{e}", self.name, if self.dead { "dead, " } else { "" }),
            Ok(i) => {
                let mut flags = Vec::new();
                if self.dead {
                    flags.push("dead");
                }
                if i.worker_paused == Some(true) {
                    flags.push("paused");
                }
                if i.worker_uptodate == Some(false) {
                    flags.push("not up to date");
                }
                format!(
                    "{} ({}): provider {}, worker {} at tick {}, lag {}{}",
                    self.name,
                    i.node_type,
                    i.provider_node.as_deref().unwrap_or("-"),
                    i.worker_name.as_deref().unwrap_or("-"),
                    i.worker_last_tick.map_or("-".into(), |t| t.to_string()),
                    self.lag.map_or("-".into(), |l| format!("{l:.1}s")),
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", flags.join(", "))
                    }
                )
            }
        }
    }
}

/// How long a step waits for a worker or consumer to acknowledge a change
/// of its state, unless told otherwise.
pub const ACK_WAIT: Duration = Duration::from_secs(60);

impl Admin {
    /// Connects to a node's database (the one cascade commands start from).
    pub async fn connect(queue: impl Into<String>, node_db: &ConnString) -> Result<Admin> {
        let app = "pgq-cascade admin".to_string();
        let local = connect(node_db, &app, Database::Node).await?;
        Ok(Admin {
            queue: queue.into(),
            local,
            app,
        })
    }

    /// The connection to the node the commands start from.
    pub fn local(&self) -> &Client {
        &self.local
    }

    fn cascade(&self, node: &str, problem: impl Into<String>) -> Error {
        Error::Cascade {
            queue: self.queue.clone(),
            node: node.to_string(),
            problem: problem.into(),
        }
    }

    /// Makes the local database the root: registers its location and
    /// creates the node (and the queue) with `worker` as its worker.
    pub async fn create_root(&self, name: &str, location: &str, worker: &str) -> Result<()> {
        let q = &self.queue;
        node::register_location(&self.local, q, name, location, false).await?;
        node::create_node(&self.local, q, NodeType::Root, name, worker, None, None, None).await?;
        Ok(())
    }

    /// Makes the local database a branch or a leaf reading from the node at
    /// `provider_location`: the node's location is registered on the root
    /// (which sends it down the cascade) and on the provider, it subscribes
    /// to the provider, learns every member, and is created at the
    /// provider's global watermark.
    pub async fn create_node(
        &self,
        node_type: NodeType,
        name: &str,
        location: &str,
        worker: &str,
        provider_location: &str,
    ) -> Result<()> {
        let q = &self.queue;
        if node_type == NodeType::Root {
            return self.create_root(name, location, worker).await;
        }
        let provider = self.connect_to(provider_location).await?;
        let pinfo = node::get_node_info(&provider, q).await?;
        if pinfo.node_type == NodeType::Leaf {
            return Err(self.cascade(&pinfo.node_name, "a leaf cannot be a provider; pick a root or a branch"));
        }
        let members = node::get_queue_locations(&provider, q).await?;
        if members.iter().any(|m| m.node_name == name) {
            return Err(self.cascade(
                name,
                "a member of that name exists already; drop it first or pick another name",
            ));
        }
        let root = self.find_root(&provider, &pinfo, &members).await?;
        if let Some(root) = &root {
            node::register_location(root, q, name, location, false).await?;
        }
        node::register_location(&provider, q, name, location, false).await?;
        let (_, wm) = node::register_subscriber(&provider, q, name, worker, None).await?;
        node::register_location(&self.local, q, name, location, false).await?;
        for m in &members {
            node::register_location(&self.local, q, &m.node_name, &m.node_location, m.dead).await?;
        }
        node::create_node(
            &self.local,
            q,
            node_type,
            name,
            worker,
            Some(&pinfo.node_name),
            wm,
            None,
        )
        .await?;
        Ok(())
    }

    /// The root's connection, found from the provider upwards (`None` when
    /// the provider is the root: use it).
    async fn find_root(&self, provider: &Client, pinfo: &NodeInfo, members: &[Location]) -> Result<Option<Client>> {
        if pinfo.node_type == NodeType::Root {
            return Ok(None);
        }
        let _ = provider;
        let mut upper = pinfo.provider_node.clone();
        for _ in 0..members.len() {
            let Some(name) = upper else { break };
            let Some(loc) = members.iter().find(|m| m.node_name == name) else {
                break;
            };
            let c = self.connect_to(&loc.node_location).await?;
            let info = node::get_node_info(&c, &self.queue).await?;
            if info.node_type == NodeType::Root {
                return Ok(Some(c));
            }
            upper = info.provider_node;
        }
        Err(self.cascade(&pinfo.node_name, "no root found above this node"))
    }

    async fn connect_to(&self, location: &str) -> Result<Client> {
        connect(&ConnString::new(location), &self.app, Database::Node).await
    }

    /// The members the local node knows.
    pub async fn members(&self) -> Result<Vec<Location>> {
        let mut m = node::get_queue_locations(&self.local, &self.queue).await?;
        m.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        Ok(m)
    }

    async fn locations(&self) -> Result<BTreeMap<String, Location>> {
        Ok(self
            .members()
            .await?
            .into_iter()
            .map(|l| (l.node_name.clone(), l))
            .collect())
    }

    /// A connection to a member, by name.
    pub async fn node(&self, name: &str) -> Result<Client> {
        let locs = self.locations().await?;
        let loc = locs
            .get(name)
            .ok_or_else(|| self.cascade(name, "no such member (see `members`)"))?;
        self.connect_to(&loc.node_location).await
    }

    /// Every member's state.
    pub async fn status(&self) -> Result<Vec<MemberStatus>> {
        let locs = self.locations().await?;
        let mut out = Vec::new();
        for (name, loc) in &locs {
            let info = match self.connect_to(&loc.node_location).await {
                Err(e) => Err(format!("cannot connect: {}", pgq_daemon::error_chain(&e))),
                Ok(c) => node::get_node_info(&c, &self.queue)
                    .await
                    .map_err(|e| pgq_daemon::error_chain(&e)),
            };
            let mut lag = None;
            if let Ok(i) = &info {
                if let (Some(p), Some(w)) = (&i.provider_node, &i.worker_name) {
                    if i.node_type != NodeType::Root {
                        if let Some(ploc) = locs.get(p) {
                            if let Ok(pc) = self.connect_to(&ploc.node_location).await {
                                if let Ok(Some(ci)) = pgq::get_consumer_info(&pc, &self.queue, w)
                                    .await
                                    .map(|v| v.into_iter().next())
                                {
                                    lag = ci.lag.map(|l| l.as_duration().as_secs_f64());
                                }
                            }
                        }
                    }
                }
            }
            out.push(MemberStatus {
                name: name.clone(),
                dead: loc.dead,
                info,
                lag,
            });
        }
        Ok(out)
    }

    /// Pauses or resumes a member's worker (`consumer` `None`) or a
    /// cascaded consumer of it, and waits up to `wait` for it to
    /// acknowledge (`None`: does not wait).
    pub async fn set_paused(
        &self,
        node_name: &str,
        consumer: Option<&str>,
        paused: bool,
        wait: Option<Duration>,
    ) -> Result<()> {
        let c = self.node(node_name).await?;
        let consumer = match consumer {
            Some(c) => c.to_string(),
            None => self.worker_of(&c, node_name).await?,
        };
        node::set_consumer_paused(&c, &self.queue, &consumer, paused).await?;
        if let Some(wait) = wait {
            self.wait_ack(&c, node_name, &consumer, wait).await?;
        }
        Ok(())
    }

    async fn worker_of(&self, c: &Client, node_name: &str) -> Result<String> {
        node::get_node_info(c, &self.queue)
            .await?
            .worker_name
            .ok_or_else(|| self.cascade(node_name, "the node has no worker"))
    }

    /// Waits until `consumer` on the node has seen its state's last change.
    async fn wait_ack(&self, c: &Client, node_name: &str, consumer: &str, wait: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if node::get_consumer_state(c, &self.queue, consumer).await?.uptodate {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.cascade(
                    node_name,
                    format!(
                        "{consumer:?} did not acknowledge the change within {}s: is its daemon running? \
                         Start it, or run the command again without waiting (--no-wait)",
                        wait.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Moves a member's worker (`consumer` `None`) or a cascaded consumer of
    /// it to another provider, losing and repeating no batch: it is paused
    /// (and its acknowledgement awaited), subscribed on the new provider at
    /// the tick it completed, pointed there, resumed, and unsubscribed from
    /// the old provider.
    pub async fn change_provider(
        &self,
        node_name: &str,
        consumer: Option<&str>,
        new_provider: &str,
        wait: Option<Duration>,
    ) -> Result<()> {
        if node_name == new_provider {
            return Err(self.cascade(node_name, "a node cannot be its own provider"));
        }
        let q = &self.queue;
        let c = self.node(node_name).await?;
        let worker = self.worker_of(&c, node_name).await?;
        let consumer = consumer.map(str::to_string).unwrap_or_else(|| worker.clone());
        let is_worker = consumer == worker;
        let st = node::get_consumer_state(&c, q, &consumer).await?;
        let old_provider = st.provider_node.clone();
        if old_provider == new_provider {
            return Ok(());
        }
        // The new provider is checked before anything is paused: a mistyped
        // name leaves the node as it was.
        let np = self.node(new_provider).await?;
        if node::get_node_info(&np, q).await?.node_type == NodeType::Leaf {
            return Err(self.cascade(new_provider, "a leaf cannot be a provider"));
        }
        node::set_consumer_paused(&c, q, &consumer, true).await?;
        if let Some(wait) = wait {
            self.wait_ack(&c, node_name, &consumer, wait).await?;
        }
        let st = node::get_consumer_state(&c, q, &consumer).await?;
        let locs = self.locations().await?;
        let own = locs
            .get(node_name)
            .ok_or_else(|| self.cascade(node_name, "the node does not know its own location"))?;
        node::register_location(&np, q, node_name, &own.node_location, false).await?;
        if is_worker {
            node::register_subscriber(&np, q, node_name, &consumer, Some(st.completed_tick)).await?;
        } else {
            pgq::register_consumer_at(&np, q, &consumer, st.completed_tick).await?;
        }
        node::change_consumer_provider(&c, q, &consumer, new_provider).await?;
        node::set_consumer_paused(&c, q, &consumer, false).await?;
        match self.node(&old_provider).await {
            Ok(op) => {
                let done = if is_worker {
                    node::unregister_subscriber(&op, q, node_name).await.map(|_| ())
                } else {
                    pgq::unregister_consumer(&op, q, &consumer).await.map(|_| ())
                };
                if let Err(e) = done {
                    log::warn!("could not unsubscribe from the old provider {old_provider}: {e}");
                }
            }
            Err(e) => log::warn!("could not reach the old provider {old_provider}: {e}"),
        }
        Ok(())
    }

    /// Makes the branch `new_root` the root while the old root works: the
    /// old root stops taking events and makes a last tick, the branch
    /// copies up to it, becomes root, and the old root becomes a branch of
    /// it. Producers must then write to the new root (the old one refuses
    /// events from the first step on). The workers of both nodes must run.
    pub async fn switchover(&self, new_root: &str, wait: Duration) -> Result<()> {
        let q = &self.queue;
        let nc = self.node(new_root).await?;
        let ninfo = node::get_node_info(&nc, q).await?;
        if ninfo.node_type != NodeType::Branch {
            return Err(self.cascade(new_root, "only a branch can become the root"));
        }
        let old_root = self.root_name().await?;
        let oc = self.node(&old_root).await?;
        let oinfo = node::get_node_info(&oc, q).await?;
        let old_worker = oinfo.worker_name.clone().unwrap_or_default();
        self.set_paused(&old_root, None, true, Some(wait)).await?;
        node::demote_root(&oc, q, 1, new_root).await?;
        let (_, last) = node::demote_root(&oc, q, 2, new_root).await?;
        let last = last.ok_or_else(|| self.cascade(&old_root, "demote_root made no last tick"))?;
        self.wait_catchup(&nc, new_root, last, wait).await?;
        self.promote(new_root, &nc, wait).await?;
        node::register_subscriber(&nc, q, &old_root, &old_worker, Some(last)).await?;
        if let Some(p) = &ninfo.provider_node {
            if let Ok(pc) = self.node(p).await {
                node::unregister_subscriber(&pc, q, new_root).await?;
            }
        }
        node::set_consumer_paused(&nc, q, &ninfo.worker_name.unwrap_or_default(), false).await?;
        node::demote_root(&oc, q, 3, new_root).await?;
        node::set_consumer_paused(&oc, q, &old_worker, false).await?;
        Ok(())
    }

    /// Makes the branch `new_root` the root in place of the dead root
    /// `dead_root`: the dead one is tagged dead everywhere, the branch
    /// becomes root at the last tick it copied, and the dead root's other
    /// subscribers move to it. Events the dead root had not passed to the
    /// branch are not in the cascade any more.
    pub async fn takeover(&self, dead_root: &str, new_root: &str, wait: Duration) -> Result<()> {
        let q = &self.queue;
        // Checked before the dead root is tagged dead on every member: a
        // mistyped name must not mark a live root dead.
        let nc = self.node(new_root).await?;
        let ninfo = node::get_node_info(&nc, q).await?;
        if ninfo.node_type != NodeType::Branch {
            return Err(self.cascade(new_root, "only a branch can become the root"));
        }
        if ninfo.provider_node.as_deref() != Some(dead_root) {
            return Err(self.cascade(new_root, format!("its provider is not {dead_root}")));
        }
        self.tag_dead(dead_root).await?;
        self.promote(new_root, &nc, wait).await?;
        node::set_consumer_paused(&nc, q, &ninfo.worker_name.unwrap_or_default(), false).await?;
        // The dead root's other subscribers read from the new root.
        for (name, loc) in self.locations().await? {
            if name == new_root || name == dead_root || loc.dead {
                continue;
            }
            let Ok(c) = self.connect_to(&loc.node_location).await else {
                continue;
            };
            let Ok(info) = node::get_node_info(&c, q).await else {
                continue;
            };
            if info.provider_node.as_deref() == Some(dead_root) {
                self.change_provider_from_dead(&name, &c, new_root, &nc).await?;
            }
        }
        Ok(())
    }

    /// Moves a node's worker from a dead provider to `new_provider` (no
    /// old provider to unsubscribe from).
    async fn change_provider_from_dead(&self, name: &str, c: &Client, new_provider: &str, np: &Client) -> Result<()> {
        let q = &self.queue;
        let worker = self.worker_of(c, name).await?;
        let st = node::get_consumer_state(c, q, &worker).await?;
        node::register_subscriber(np, q, name, &worker, Some(st.completed_tick)).await?;
        node::change_consumer_provider(c, q, &worker, new_provider).await?;
        Ok(())
    }

    /// Pauses a branch's worker and promotes the branch.
    async fn promote(&self, name: &str, c: &Client, wait: Duration) -> Result<()> {
        let worker = self.worker_of(c, name).await?;
        node::set_consumer_paused(c, &self.queue, &worker, true).await?;
        self.wait_ack(c, name, &worker, wait).await?;
        node::promote_branch(c, &self.queue).await?;
        Ok(())
    }

    async fn wait_catchup(&self, c: &Client, name: &str, tick: i64, wait: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let info = node::get_node_info(c, &self.queue).await?;
            if info.worker_last_tick.is_some_and(|t| t >= tick) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.cascade(
                    name,
                    format!(
                        "did not copy up to tick {tick} within {}s: is its worker running?",
                        wait.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The name of the root, as the members say.
    pub async fn root_name(&self) -> Result<String> {
        for (name, loc) in self.locations().await? {
            if loc.dead {
                continue;
            }
            let Ok(c) = self.connect_to(&loc.node_location).await else {
                continue;
            };
            if let Ok(info) = node::get_node_info(&c, &self.queue).await {
                if info.node_type == NodeType::Root {
                    return Ok(name);
                }
            }
        }
        Err(self.cascade("", "no live member is the root"))
    }

    /// Tags a node dead on every live member.
    pub async fn tag_dead(&self, dead: &str) -> Result<()> {
        node::set_location_dead(&self.local, &self.queue, dead, true).await?;
        for (name, loc) in self.locations().await? {
            if name == dead || loc.dead {
                continue;
            }
            match self.connect_to(&loc.node_location).await {
                Ok(c) => {
                    if let Err(e) = node::set_location_dead(&c, &self.queue, dead, true).await {
                        log::warn!("node {name}: {e}");
                    }
                }
                Err(e) => log::warn!("node {name}: {e}"),
            }
        }
        Ok(())
    }

    /// Drops a node: from its provider (its subscription), from the node
    /// itself when it is reachable (its queue and state), and its location
    /// from the root (which tells the other members). Refused for a node
    /// that others read from.
    pub async fn drop_node(&self, name: &str) -> Result<()> {
        let q = &self.queue;
        let locs = self.locations().await?;
        if !locs.contains_key(name) {
            return Err(self.cascade(name, "no such member (see `members`)"));
        }
        for (other, loc) in &locs {
            if other == name || loc.dead {
                continue;
            }
            if let Ok(c) = self.connect_to(&loc.node_location).await {
                if let Ok(info) = node::get_node_info(&c, q).await {
                    if info.provider_node.as_deref() == Some(name) && info.node_type != NodeType::Root {
                        return Err(
                            self.cascade(name, format!("node {other} reads from it: change its provider first"))
                        );
                    }
                }
            }
        }
        if let Ok(c) = self.node(name).await {
            if let Ok(info) = node::get_node_info(&c, q).await {
                if let Some(p) = info.provider_node.filter(|p| p != name) {
                    if let Ok(pc) = self.node(&p).await {
                        let _ = node::unregister_subscriber(&pc, q, name).await;
                    }
                }
            }
            node::drop_node(&c, q, name).await?;
        }
        let root = self.root_name().await?;
        if root != name {
            let rc = self.node(&root).await?;
            match node::drop_node(&rc, q, name).await {
                Err(e) if e.node_code().is_some() => log::info!("{e}"),
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}
