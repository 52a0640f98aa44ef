//! `webhook`: asynchronous HTTP requests with back-off (the job of
//! slipstream), on PgQ.
//!
//! `webhook -c CONF enqueue --url URL [--method M] [--header 'K: V']...
//! [--body B]` stores a request as an event (type `http`, a JSON payload);
//! the daemon (`start`, `run`) performs it. A 2xx answer is done. Any other
//! status, a timeout or a connection error is tried again after
//! `backoff_base` seconds, doubling each attempt; after `max_attempts`
//! attempts the event is failed with the status or the error as its reason,
//! so `failed` shows it and `retry all` sends it again. Nothing is ever
//! dropped: unlike slipstream's logs, the queue never overwrites old work.
//!
//! Delivery is at least once: a request whose answer came but whose batch
//! did not commit (a crash, a lost database) is sent again. Every request
//! carries a `Webhook-Id` header (the event id, unless the request sets that
//! header itself) so a receiver can recognise a repeat.
//!
//! `[settings]`: `backoff_base` (seconds, default 10), `backoff_max`
//! (seconds, default 3600), `max_attempts` (default 3), `timeout` (seconds
//! per attempt, default 30), `concurrency` (requests of a batch in flight at
//! once, default 8).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use futures_util::future::join_all;
use pgq_consumers::{
    async_trait, backoff, notice, verbose, warning, Batch, BatchEnd, BoxError, Config, Consumer, Context, Database,
    Event, ExitCode, Outcome,
};
use pgq_examples::http;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// The `ev_type` of a stored request.
const EV_TYPE: &str = "http";
/// The header carrying the event id.
const ID_HEADER: &str = "webhook-id";

/// A request as stored in an event's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Request {
    url: String,
    method: String,
    /// Name and value pairs, in order (a name may repeat).
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

impl Request {
    /// Checks what the user gave: an http(s) URL, a method, `Name: value`
    /// headers. The method defaults to GET, or POST with a body.
    fn new(url: &str, method: Option<&str>, headers: &[String], body: Option<String>) -> Result<Request, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("--url {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("--url {url:?}: only http and https URLs can be requested"));
        }
        let method = match method {
            Some(m) => m.to_ascii_uppercase(),
            None if body.is_some() => "POST".into(),
            None => "GET".into(),
        };
        reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("--method {method:?} is not an HTTP method"))?;
        let headers = headers
            .iter()
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h:?} is not of the form 'Name: value'"))?;
                let (name, value) = (name.trim(), value.trim());
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("--header {h:?}: {name:?} is not a header name"))?;
                HeaderValue::from_str(value).map_err(|_| format!("--header {h:?}: the value is not a header value"))?;
                Ok((name.to_string(), value.to_string()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Request {
            url: url.to_string(),
            method,
            headers,
            body,
        })
    }
}

/// What `[settings]` says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    #[serde(with = "pgq_consumers::seconds")]
    backoff_base: Duration,
    #[serde(with = "pgq_consumers::seconds")]
    backoff_max: Duration,
    max_attempts: NonZeroU32,
    #[serde(with = "pgq_consumers::seconds")]
    timeout: Duration,
    concurrency: NonZeroUsize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            max_attempts: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            timeout: Duration::from_secs(30),
            concurrency: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// The consumer: performs the stored requests.
#[derive(Default)]
struct Webhook {
    settings: Option<Settings>,
    client: Option<reqwest::Client>,
}

impl Webhook {
    /// Performs one stored request and says what becomes of its event.
    async fn deliver(settings: &Settings, client: &reqwest::Client, ev: &Event) -> Outcome {
        let request: Request = match ev.json_as() {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("not a webhook request: {e}")),
        };
        let attempt = ev.ev_retry.unwrap_or(0).saturating_add(1);
        let problem = match send(client, &request, ev.ev_id).await {
            Ok(status) if status.is_success() => {
                verbose!(
                    "event {}: {} {} answered {status} (attempt {attempt})",
                    ev.ev_id,
                    request.method,
                    request.url
                );
                return Outcome::Ok;
            }
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e,
        };
        if u32::try_from(attempt).unwrap_or(u32::MAX) >= settings.max_attempts.get() {
            warning!(
                "event {}: {} {} failed: {problem} (attempt {attempt} of {}); giving up",
                ev.ev_id,
                request.method,
                request.url,
                settings.max_attempts
            );
            return Outcome::Failed(format!("{problem} (attempt {attempt} of {})", settings.max_attempts));
        }
        let delay = backoff(settings.backoff_base, ev.retries(), settings.backoff_max);
        notice!(
            "event {}: {} {} failed: {problem} (attempt {attempt} of {}); trying again in {:.1}s",
            ev.ev_id,
            request.method,
            request.url,
            settings.max_attempts,
            delay.as_secs_f64()
        );
        Outcome::Retry(delay)
    }

    fn ready(&self) -> Result<(&Settings, reqwest::Client), BoxError> {
        match (&self.settings, &self.client) {
            (Some(s), Some(c)) => Ok((s, c.clone())),
            _ => Err("webhook: not configured".into()),
        }
    }
}

/// Sends a request; the answer's status, or what went wrong.
async fn send(client: &reqwest::Client, request: &Request, ev_id: i64) -> Result<reqwest::StatusCode, String> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", request.method))?;
    let mut builder = client.request(method, &request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !request.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(ID_HEADER)) {
        builder = builder.header(ID_HEADER, ev_id.to_string());
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = builder.send().await.map_err(|e| http::error_text(&e))?;
    let status = response.status();
    // Read (a little of) the body, so the connection can be reused.
    let _ = http::body_prefix(response, 64 * 1024).await;
    Ok(status)
}

#[async_trait]
impl Consumer for Webhook {
    type Settings = Settings;

    async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let (settings, client) = self.ready()?;
        Ok(Webhook::deliver(settings, &client, ev).await)
    }

    /// Up to `concurrency` requests of the batch at once; their outcomes are
    /// applied in event order, in the batch's transaction.
    async fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<BatchEnd, BoxError> {
        let (settings, client) = self.ready()?;
        loop {
            let mut events = Vec::with_capacity(settings.concurrency.get());
            while events.len() < settings.concurrency.get() {
                match batch.next_event().await? {
                    Some(ev) => events.push(ev),
                    None => break,
                }
            }
            if events.is_empty() {
                return Ok(BatchEnd::Finish);
            }
            let outcomes = join_all(events.iter().map(|ev| Webhook::deliver(settings, &client, ev))).await;
            for (ev, outcome) in events.iter().zip(outcomes) {
                if batch.apply(ev, outcome).await? == BatchEnd::Abort {
                    return Ok(BatchEnd::Abort);
                }
            }
        }
    }

    async fn configure(&mut self, settings: Settings) -> Result<(), BoxError> {
        if settings.timeout.is_zero() {
            return Err("[settings] timeout must be more than 0 seconds".into());
        }
        let same_timeout = self.settings.as_ref().is_some_and(|s| s.timeout == settings.timeout);
        if self.client.is_none() || !same_timeout {
            self.client = Some(http::client(settings.timeout, false)?);
        }
        self.settings = Some(settings);
        Ok(())
    }
}

/// The commands `webhook` has besides the standard ones.
#[derive(Debug, clap::Subcommand)]
enum Extra {
    /// Store an HTTP request in the queue; the daemon performs it, with back-off.
    Enqueue {
        /// The URL (http or https).
        #[arg(long)]
        url: String,
        /// The method (default GET, or POST with --body).
        #[arg(long, short = 'X')]
        method: Option<String>,
        /// A header, `Name: value`; repeat for more.
        #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'")]
        headers: Vec<String>,
        /// The request's body.
        #[arg(long, short = 'd')]
        body: Option<String>,
    },
}

async fn extra(command: Extra, config: Config) -> Result<(), BoxError> {
    let Extra::Enqueue {
        url,
        method,
        headers,
        body,
    } = command;
    let request = Request::new(&url, method.as_deref(), &headers, body)?;
    let payload = serde_json::to_string(&request)?;
    let db = pgq_consumers::connect(&config.db, "webhook enqueue", Database::Queue).await?;
    let id = pgq::insert_event(&db, &config.queue, EV_TYPE, &payload).await?;
    pgq_daemon::outln!("enqueued event {id}: {} {}", request.method, request.url);
    Ok(())
}

fn main() -> ExitCode {
    pgq_consumers::main_with(Webhook::default, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_defaulted() {
        let r = Request::new(
            "http://h/x",
            None,
            &["X-A: 1 ".into(), "b:two".into()],
            Some("hi".into()),
        );
        assert_eq!(
            r,
            Ok(Request {
                url: "http://h/x".into(),
                method: "POST".into(),
                headers: vec![("X-A".into(), "1".into()), ("b".into(), "two".into())],
                body: Some("hi".into()),
            })
        );
        assert_eq!(
            Request::new("https://h", Some("put"), &[], None).map(|r| r.method),
            Ok("PUT".into())
        );
        assert!(Request::new("ftp://h", None, &[], None).is_err_and(|e| e.contains("http")));
        assert!(Request::new("nope", None, &[], None).is_err_and(|e| e.contains("not a URL")));
        assert!(Request::new("http://h", Some("BAD METHOD"), &[], None).is_err());
        assert!(Request::new("http://h", None, &["no colon".into()], None).is_err_and(|e| e.contains("Name: value")));
    }

    #[test]
    fn settings_have_defaults_and_refuse_unknown_keys() {
        let s: Result<Settings, _> = toml::from_str("");
        assert_eq!(
            s.map(|s| (s.max_attempts.get(), s.backoff_base)).ok(),
            Some((3, Duration::from_secs(10)))
        );
        let s: Result<Settings, _> = toml::from_str("max_attempt = 3");
        assert!(s.is_err_and(|e| e.to_string().contains("max_attempt")));
        let s: Result<Settings, _> = toml::from_str("max_attempts = 0");
        assert!(s.is_err_and(|e| e.to_string().contains("nonzero")));
    }
}
