//! The web console.
use pgq_consumers::ConnString;
use crate::cli::ServeArgs;
/// Serves the console.
pub async fn serve(_dsn: ConnString, _args: ServeArgs) -> anyhow::Result<()> { Ok(()) }
