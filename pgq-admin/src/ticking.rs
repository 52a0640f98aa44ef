//! Who ticks the database: an embedded ticker's leader (the framework's
//! advisory lock, [`pgq_consumers::ticker::leader`]), or `pgqd`, seen in
//! `pg_stat_activity` by what it runs (it sets no `application_name`).

use anyhow::Context as _;
use serde::Serialize;
use tokio_postgres::GenericClient;

/// What the console found ticking the database.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ticking {
    /// The leader of the embedded tickers (consumer daemons with `[ticker]`
    /// or `pgq-ticker`), if one holds the lock.
    pub leader: Option<Leader>,
    /// Backend pids of sessions whose last statement is one of pgqd's
    /// (`pgq.ticker()`, `pgq.maint_*`), other than the leader's.
    pub pgqd: Vec<i32>,
    /// Whether the statements of other roles' sessions were hidden from us
    /// (without `pg_read_all_stats`): pgqd may then run unseen.
    pub others_hidden: bool,
}

/// The embedded ticker's leader.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Leader {
    /// Its backend pid.
    pub pid: i32,
    /// Its connection's `application_name`.
    pub application_name: String,
}

impl Ticking {
    /// One line: who ticks.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.leader {
            parts.push(format!(
                "embedded ticker, led by backend pid {} ({})",
                l.pid,
                if l.application_name.is_empty() {
                    "no application_name"
                } else {
                    &l.application_name
                }
            ));
        }
        for pid in &self.pgqd {
            parts.push(format!("pgqd (backend pid {pid})"));
        }
        if parts.is_empty() {
            if self.others_hidden {
                "no ticker seen (other roles' sessions are hidden: pgqd may run unseen; pg_read_all_stats shows them)"
                    .into()
            } else {
                "no ticker seen: start pgqd or a consumer with [ticker] enabled".into()
            }
        } else {
            parts.join("; ")
        }
    }
}

/// pgqd's statements: what its ticker and maintenance run (and its check
/// of PgQ's version), from a session without an `application_name`.
const PGQD: &str = "select a.pid, a.query = '<insufficient privilege>' as hidden, \
       coalesce(a.application_name, '') = '' \
         and a.query ~* 'pgq\\.(ticker|maint_[a-z_0-9]+|version)\\s*\\(' as pgqd \
  from pg_stat_activity a \
 where a.datname = current_database() and a.pid <> pg_backend_pid() and a.backend_type = 'client backend'";

/// Reads who ticks the database `client` is connected to.
pub async fn read(client: &impl GenericClient) -> anyhow::Result<Ticking> {
    let leader = pgq_consumers::ticker::leader(client)
        .await
        .context("reading the embedded ticker's leader")?;
    let rows = client.query(PGQD, &[]).await.context("reading pg_stat_activity")?;
    let mut ticking = Ticking {
        leader: leader.map(|l| Leader {
            pid: l.pid,
            application_name: l.application_name,
        }),
        pgqd: Vec::new(),
        others_hidden: false,
    };
    for row in rows {
        let pid: i32 = row.try_get(0)?;
        let hidden: Option<bool> = row.try_get(1)?;
        let pgqd: Option<bool> = row.try_get(2)?;
        ticking.others_hidden |= hidden.unwrap_or(false);
        if pgqd.unwrap_or(false) && ticking.leader.as_ref().map(|l| l.pid) != Some(pid) {
            ticking.pgqd.push(pid);
        }
    }
    Ok(ticking)
}
