//! PgQ's trigger functions (`pgq.logutriga`, `pgq.jsontriga`, `pgq.sqltriga`):
//! helpers that create such a trigger on a table, so every row change there
//! becomes an event in a queue, in the same transaction.

use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::ident::{quote_ident, quote_literal, quote_qualified};

/// Which PgQ trigger function, that is, how rows are encoded into `ev_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// `pgq.logutriga`: urlencoded columns (read with [`Event::urlencoded`](crate::Event::urlencoded)).
    Logutriga,
    /// `pgq.jsontriga`: a JSON object (read with [`Event::json`](crate::Event::json)).
    Jsontriga,
    /// `pgq.sqltriga`: a partial SQL statement.
    Sqltriga,
}

impl TriggerKind {
    fn function(self) -> &'static str {
        match self {
            TriggerKind::Logutriga => "pgq.logutriga",
            TriggerKind::Jsontriga => "pgq.jsontriga",
            TriggerKind::Sqltriga => "pgq.sqltriga",
        }
    }
}

/// The row operations a trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
}

/// The event fields a trigger option can set from an SQL expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventField {
    /// `ev_type`.
    Type,
    /// `ev_data`.
    Data,
    /// `ev_extra1`.
    Extra1,
    /// `ev_extra2`.
    Extra2,
    /// `ev_extra3`.
    Extra3,
    /// `ev_extra4`.
    Extra4,
}

impl EventField {
    fn name(self) -> &'static str {
        match self {
            EventField::Type => "ev_type",
            EventField::Data => "ev_data",
            EventField::Extra1 => "ev_extra1",
            EventField::Extra2 => "ev_extra2",
            EventField::Extra3 => "ev_extra3",
            EventField::Extra4 => "ev_extra4",
        }
    }
}

/// The optional arguments PgQ's trigger functions take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerOption {
    /// `SKIP`: the row change itself is dropped, only the event is kept.
    /// Needs a `BEFORE` trigger ([`TriggerSpec::before`]).
    Skip,
    /// `ignore=`: these columns are left out of the event.
    Ignore(Vec<String>),
    /// `pkey=`: these columns are the key, instead of the table's primary key.
    Pkey(Vec<String>),
    /// `backup`: the old row goes into `ev_extra2`.
    Backup,
    /// `FIELD=EXPR`: an event field set from an SQL expression over the row.
    /// The expression is SQL: it must come from the program, not from untrusted input.
    Set(EventField, String),
    /// `when=EXPR`: only rows for which the SQL expression is true make an
    /// event. The same caution as for [`TriggerOption::Set`] applies.
    When(String),
}

/// A PgQ trigger to create with [`create_trigger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    /// Trigger name.
    pub name: String,
    /// The table, optionally schema-qualified (`schema.table`).
    pub table: String,
    /// The queue its events go to.
    pub queue: String,
    /// The trigger function.
    pub kind: TriggerKind,
    /// The row operations it fires on; empty means all three.
    pub ops: Vec<RowOp>,
    /// `BEFORE` instead of `AFTER` (needed for [`TriggerOption::Skip`]).
    pub before: bool,
    /// Optional arguments.
    pub options: Vec<TriggerOption>,
}

impl TriggerSpec {
    /// An `AFTER INSERT OR UPDATE OR DELETE` trigger of the given kind, no options.
    pub fn new(kind: TriggerKind, name: &str, table: &str, queue: &str) -> TriggerSpec {
        TriggerSpec {
            name: name.into(),
            table: table.into(),
            queue: queue.into(),
            kind,
            ops: Vec::new(),
            before: false,
            options: Vec::new(),
        }
    }

    /// The `CREATE TRIGGER` statement, identifiers quoted and arguments
    /// checked and written as literals.
    pub fn to_sql(&self) -> Result<String> {
        let invalid = |problem: String| Error::InvalidArgument {
            what: "trigger",
            problem,
        };
        if self.queue.is_empty() {
            return Err(invalid("the queue name is empty".into()));
        }
        if !self.before && self.options.contains(&TriggerOption::Skip) {
            return Err(invalid(
                "SKIP drops the row change, so it needs a BEFORE trigger".into(),
            ));
        }
        let mut args = vec![quote_literal(&self.queue)?];
        for opt in &self.options {
            let arg = match opt {
                TriggerOption::Skip => "SKIP".to_string(),
                TriggerOption::Backup => "backup".to_string(),
                TriggerOption::Ignore(cols) => format!("ignore={}", column_list(cols)?),
                TriggerOption::Pkey(cols) => format!("pkey={}", column_list(cols)?),
                TriggerOption::Set(field, expr) => format!("{}={}", field.name(), non_empty_expr(expr)?),
                TriggerOption::When(expr) => format!("when={}", non_empty_expr(expr)?),
            };
            args.push(quote_literal(&arg)?);
        }
        let ops = if self.ops.is_empty() {
            vec![RowOp::Insert, RowOp::Update, RowOp::Delete]
        } else {
            self.ops.clone()
        };
        let mut ops_sql: Vec<&str> = Vec::new();
        for op in ops {
            let name = match op {
                RowOp::Insert => "insert",
                RowOp::Update => "update",
                RowOp::Delete => "delete",
            };
            if !ops_sql.contains(&name) {
                ops_sql.push(name);
            }
        }
        Ok(format!(
            "create trigger {} {} {} on {} for each row execute procedure {}({})",
            quote_ident(&self.name)?,
            if self.before { "before" } else { "after" },
            ops_sql.join(" or "),
            quote_qualified(&self.table)?,
            self.kind.function(),
            args.join(", ")
        ))
    }
}

fn column_list(cols: &[String]) -> Result<String> {
    if cols.is_empty() {
        return Err(Error::InvalidArgument {
            what: "trigger",
            problem: "an empty column list".into(),
        });
    }
    for c in cols {
        if c.is_empty() || c.contains(',') {
            return Err(Error::InvalidArgument {
                what: "trigger",
                problem: format!("column name {c:?} is empty or contains a comma"),
            });
        }
    }
    Ok(cols.join(","))
}

fn non_empty_expr(expr: &str) -> Result<&str> {
    if expr.trim().is_empty() {
        return Err(Error::InvalidArgument {
            what: "trigger",
            problem: "an empty SQL expression".into(),
        });
    }
    Ok(expr)
}

/// Creates a PgQ trigger on a table (see [`TriggerSpec`]).
pub async fn create_trigger(client: &impl GenericClient, spec: &TriggerSpec) -> Result<()> {
    let sql = spec.to_sql()?;
    client.batch_execute(&sql).await.map_err(Error::sql(
        spec.kind.function(),
        format!("table {:?}, queue {:?}", spec.table, spec.queue),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_sql_quotes_names_and_arguments() {
        let mut spec = TriggerSpec::new(TriggerKind::Logutriga, "tg\"x", "public.my table", "q'1");
        spec.options.push(TriggerOption::Ignore(vec!["a".into(), "b".into()]));
        let sql = spec.to_sql().expect("valid spec");
        assert_eq!(
            sql,
            "create trigger \"tg\"\"x\" after insert or update or delete on \"public\".\"my table\" \
             for each row execute procedure pgq.logutriga(E'q''1', E'ignore=a,b')"
        );
    }

    #[test]
    fn skip_needs_a_before_trigger() {
        let mut spec = TriggerSpec::new(TriggerKind::Sqltriga, "t", "t", "q");
        spec.options.push(TriggerOption::Skip);
        assert!(spec.to_sql().is_err());
        spec.before = true;
        assert!(spec.to_sql().is_ok());
    }

    #[test]
    fn bad_column_lists_are_refused() {
        let mut spec = TriggerSpec::new(TriggerKind::Jsontriga, "t", "t", "q");
        spec.options.push(TriggerOption::Pkey(vec!["a,b".into()]));
        assert!(spec.to_sql().is_err());
    }
}
