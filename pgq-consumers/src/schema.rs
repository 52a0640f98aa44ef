//! The framework's own SQL (schema `pgq_consumer`): installing and upgrading
//! it from the versioned files in `sql/pgq_consumer/`, embedded in the binary.

use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};

/// One versioned file of the framework's SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaFile {
    /// The version the file brings the schema to.
    pub version: i32,
    /// Its path in the source tree, for messages.
    pub file: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// The framework's SQL files, oldest first. Each is idempotent and records
/// its own version in `pgq_consumer.schema_version`.
pub const FILES: &[SchemaFile] = &[
    SchemaFile {
        version: 1,
        file: "sql/pgq_consumer/v1.sql",
        sql: include_str!("../sql/pgq_consumer/v1.sql"),
    },
    SchemaFile {
        version: 2,
        file: "sql/pgq_consumer/v2.sql",
        sql: include_str!("../sql/pgq_consumer/v2.sql"),
    },
    SchemaFile {
        version: 3,
        file: "sql/pgq_consumer/v3.sql",
        sql: include_str!("../sql/pgq_consumer/v3.sql"),
    },
    SchemaFile {
        version: 4,
        file: "sql/pgq_consumer/v4.sql",
        sql: include_str!("../sql/pgq_consumer/v4.sql"),
    },
    SchemaFile {
        version: 5,
        file: "sql/pgq_consumer/v5.sql",
        sql: include_str!("../sql/pgq_consumer/v5.sql"),
    },
    SchemaFile {
        version: 6,
        file: "sql/pgq_consumer/v6.sql",
        sql: include_str!("../sql/pgq_consumer/v6.sql"),
    },
];

/// The newest schema version this program has.
pub const VERSION: i32 = 6;

/// The advisory lock (two-key form) that serializes installs in a database:
/// "pgqc" and 1.
const LOCK_KEYS: (i32, i32) = (0x7067_7163, 1);

/// Installs or upgrades the `pgq_consumer` schema to [`VERSION`] in
/// one transaction of its own, and returns the version now installed.
///
/// Safe to run again (nothing to do) and concurrently (installs wait for each
/// other on an advisory lock). Needs no pgq extension: it is also how a
/// remote consumer's database gets its batch tracking. A database with a
/// newer schema is left alone with [`Error::SchemaTooNew`].
///
/// Takes a [`Client`] rather than any `GenericClient` because it opens the
/// transaction itself; inside a transaction of yours, use
/// [`install_in_transaction`].
pub async fn install(client: &Client) -> Result<i32> {
    install_to(client, VERSION).await
}

/// [`install`], stopping at `version` (to test upgrades, or to stay on an
/// older version).
pub async fn install_to(client: &Client, version: i32) -> Result<i32> {
    client.batch_execute("begin").await.map_err(|source| Error::Schema {
        step: "beginning the install",
        source,
    })?;
    match install_in_transaction_to(client, version).await {
        Ok(v) => {
            client.batch_execute("commit").await.map_err(|source| Error::Schema {
                step: "committing the install",
                source,
            })?;
            Ok(v)
        }
        Err(e) => {
            // The first error is the one to report; a failed rollback means
            // the connection is gone, and the transaction with it.
            let _ = client.batch_execute("rollback").await;
            Err(e)
        }
    }
}

/// [`install`] inside the caller's transaction (which `client` must be in:
/// the advisory lock is held until it ends, and the caller commits).
pub async fn install_in_transaction(client: &impl GenericClient) -> Result<i32> {
    install_in_transaction_to(client, VERSION).await
}

async fn install_in_transaction_to(client: &impl GenericClient, target: i32) -> Result<i32> {
    client
        .execute(
            "select pg_catalog.pg_advisory_xact_lock($1, $2)",
            &[&LOCK_KEYS.0, &LOCK_KEYS.1],
        )
        .await
        .map_err(|source| Error::Schema {
            step: "locking",
            source,
        })?;
    let installed = installed_version(client).await?;
    if let Some(v) = installed {
        if v > VERSION {
            return Err(Error::SchemaTooNew {
                installed: v,
                supported: VERSION,
            });
        }
        if v >= target {
            return Ok(v);
        }
    }
    let from = installed.unwrap_or(0);
    for f in FILES.iter().filter(|f| f.version > from && f.version <= target) {
        client.batch_execute(f.sql).await.map_err(|source| Error::SchemaFile {
            file: f.file,
            version: f.version,
            source,
        })?;
    }
    Ok(installed_version(client).await?.unwrap_or(0))
}

/// Fails with [`Error::SchemaOutdated`], saying to run `install`, unless the
/// `pgq_consumer` schema in `which` (the database `client` is connected to)
/// is at [`VERSION`] or newer.
pub async fn require(client: &impl GenericClient, which: crate::net::connect::Database) -> Result<()> {
    match installed_version(client).await? {
        Some(v) if v >= VERSION => Ok(()),
        installed => Err(Error::SchemaOutdated {
            which,
            installed,
            needed: VERSION,
        }),
    }
}

/// The installed version of the `pgq_consumer` schema, `None` when it is not
/// installed.
pub async fn installed_version(client: &impl GenericClient) -> Result<Option<i32>> {
    let reading = |source| Error::Schema {
        step: "reading the version",
        source,
    };
    let row = client
        .query_one(
            "select pg_catalog.to_regclass('pgq_consumer.schema_version') is not null as installed",
            &[],
        )
        .await
        .map_err(reading)?;
    let present: bool = row.try_get("installed").map_err(reading)?;
    if !present {
        return Ok(None);
    }
    let row = client
        .query_one("select max(version) as version from pgq_consumer.schema_version", &[])
        .await
        .map_err(reading)?;
    row.try_get("version").map_err(reading)
}
