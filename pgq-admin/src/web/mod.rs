//! The web console, `pgq-admin serve`: the command line's views as pages,
//! server-rendered (axum, and maud for the markup: templates are Rust code,
//! checked at compile time, and maud escapes every value spliced in), with
//! charts as inline SVG and one small script of our own for live refresh.
//! No Node toolchain: the script and the stylesheet are files of this crate,
//! served by the binary.
//!
//! Read-only unless started with `--writes`; writes then need the token
//! ([`auth`]). Every response carries a Content-Security-Policy that allows
//! scripts from the console only, so even markup that slipped through could
//! run nothing. No page ever shows the connection string: errors of
//! connecting are told in the console's log only.

mod auth;
mod chart;
mod pages;
mod samples;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::Markup;
use pgq_consumers::failed::{self, Filter};
use pgq_consumers::{ConnString, ExitCode, CONTROL_TIMEOUT};
use serde::Deserialize;
use tokio_postgres::Client;

use crate::cli::ServeArgs;
use crate::failure::{self, Usage};
use crate::snapshot;
use auth::Auth;
use samples::History;

/// Failed events per page.
const PER_PAGE: i64 = 50;

/// What the handlers share.
struct Console {
    dsn: ConnString,
    db: tokio::sync::Mutex<Option<Arc<Client>>>,
    auth: Option<Auth>,
    history: std::sync::Mutex<History>,
    refresh_every: f64,
}

type Shared = Arc<Console>;

/// Serves the console until the process is stopped.
pub async fn serve(dsn: ConnString, args: ServeArgs) -> anyhow::Result<()> {
    if !(args.sample_every >= 0.1 && args.sample_every.is_finite()) {
        return Err(Usage("--sample-every must be at least 0.1 (seconds)".into()).into());
    }
    if !(args.refresh_every >= 0.1 && args.refresh_every.is_finite()) {
        return Err(Usage("--refresh-every must be at least 0.1 (seconds)".into()).into());
    }
    let auth = if args.writes {
        Some(Auth::load(args.token_file.as_deref())?)
    } else {
        None
    };
    let console = Arc::new(Console {
        dsn,
        db: tokio::sync::Mutex::new(None),
        auth,
        history: std::sync::Mutex::new(History::default()),
        refresh_every: args.refresh_every,
    });
    // A wrong database is said now, with its exit code, not at the first page.
    tokio::time::timeout(CONTROL_TIMEOUT, async {
        let db = console.client().await?;
        snapshot::require_pgq(&*db).await
    })
    .await
    .map_err(|_| failure::NoAnswer(CONTROL_TIMEOUT))??;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        pgq_consumers::pgq_daemon::errln!(
            "pgq-admin: listening on {addr}, which is not loopback: anyone who reaches it sees the queues"
        );
    }
    pgq_consumers::pgq_daemon::outln!(
        "pgq-admin: console at http://{addr}/ ({})",
        if console.auth.is_some() {
            "writes allowed with the token"
        } else {
            "read-only"
        }
    );
    tokio::spawn(sample(console.clone(), Duration::from_secs_f64(args.sample_every)));
    axum::serve(listener, router(console))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the console")
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/status", get(status_json))
        .route("/failed", get(failed_page).post(failed_write))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

/// Headers on every response: scripts, styles and forms from the console
/// only, no framing, no sniffing, no referrer to other sites.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not "no-referrer": with it, browsers send `Origin: null` on the console's own forms.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Samples the figures of the charts every `every`. A failure is logged
/// once, until a sample succeeds again.
async fn sample(console: Shared, every: Duration) {
    let mut failing = false;
    loop {
        match console.with_db(async |db| snapshot::read(db).await).await {
            Ok(s) => {
                failing = false;
                console
                    .history
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(&s, Instant::now());
            }
            Err(Trouble::Unavailable(e) | Trouble::Failed(e)) if !failing => {
                failing = true;
                pgq_consumers::pgq_daemon::errln!("pgq-admin: sampling the charts' figures failed: {e:#}");
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

/// Why a page could not be made.
enum Trouble {
    /// Connecting failed: told in the log only (its message names the server).
    Unavailable(anyhow::Error),
    /// Anything else: its message is shown.
    Failed(anyhow::Error),
    /// A request the console refuses.
    Refused(StatusCode, String),
}

impl From<anyhow::Error> for Trouble {
    fn from(e: anyhow::Error) -> Trouble {
        if failure::exit_code(&e) == ExitCode::CannotConnect {
            Trouble::Unavailable(e)
        } else {
            Trouble::Failed(e)
        }
    }
}

impl IntoResponse for Trouble {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Trouble::Unavailable(e) => {
                pgq_consumers::pgq_daemon::errln!("pgq-admin: {e:#}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database cannot be reached or does not answer; the console's log says why.".to_string(),
                )
            }
            Trouble::Failed(e) => {
                let status = if failure::exit_code(&e) == ExitCode::WrongState {
                    StatusCode::CONFLICT
                } else if e.chain().any(|c| c.is::<failure::Refused>()) {
                    StatusCode::FORBIDDEN
                } else if e.chain().any(|c| c.is::<Usage>()) {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (status, format!("{e:#}"))
            }
            Trouble::Refused(status, text) => (status, text),
        };
        (status, page("Error", None, None, pages::message(&text))).into_response()
    }
}

fn page(title: &str, refresh: Option<f64>, logged_in: Option<bool>, body: Markup) -> Html<String> {
    Html(pages::layout(title, refresh, logged_in, body).into_string())
}

impl Console {
    /// The console's connection, opened again when it was lost.
    async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let mut db = self.db.lock().await;
        if let Some(c) = db.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = crate::cli::connect(&self.dsn).await?;
        // The server gives up where the console does: a query left running
        // would hold the one connection every page waits on.
        c.batch_execute(&format!("set statement_timeout = {}", CONTROL_TIMEOUT.as_millis()))
            .await?;
        let c = Arc::new(c);
        *db = Some(c.clone());
        Ok(c)
    }

    /// `work` on the connection, within [`CONTROL_TIMEOUT`].
    async fn with_db<T>(&self, work: impl AsyncFnOnce(&Client) -> anyhow::Result<T>) -> Result<T, Trouble> {
        let done = tokio::time::timeout(CONTROL_TIMEOUT, async {
            let db = self.client().await.map_err(Trouble::Unavailable)?;
            work(&db).await.map_err(Trouble::from)
        })
        .await;
        match done {
            Ok(done) => done,
            Err(_) => {
                // Whatever it was waiting for may never come: the next
                // request opens a connection of its own.
                *self.db.lock().await = None;
                Err(Trouble::Unavailable(failure::NoAnswer(CONTROL_TIMEOUT).into()))
            }
        }
    }

    /// `None`: read-only; `Some(logged_in)` otherwise.
    fn login_state(&self, headers: &HeaderMap) -> Option<bool> {
        let auth = self.auth.as_ref()?;
        Some(session(headers).and_then(|id| auth.csrf(&id)).is_some())
    }
}

fn session(headers: &HeaderMap) -> Option<String> {
    auth::session_of(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()))
}

async fn dashboard(State(console): State<Shared>, headers: HeaderMap) -> Result<Html<String>, Trouble> {
    let s = console.with_db(async |db| snapshot::read(db).await).await?;
    let body = {
        let history = console.history.lock().unwrap_or_else(|e| e.into_inner());
        pages::dashboard(&s, &history, Instant::now())
    };
    Ok(page(
        &format!("database {}", s.database),
        Some(console.refresh_every),
        console.login_state(&headers),
        body,
    ))
}

async fn status_json(State(console): State<Shared>) -> Result<Response, Trouble> {
    let s = console.with_db(async |db| snapshot::read(db).await).await?;
    let body = serde_json::to_string(&s).map_err(|e| Trouble::Failed(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The failed-events page's query.
#[derive(Deserialize)]
struct FailedQuery {
    queue: String,
    consumer: String,
    #[serde(rename = "type", default)]
    ev_type: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    done: Option<String>,
}

fn filter_of(ev_type: &str, text: &str) -> Filter {
    let mut f = Filter::new();
    if !ev_type.is_empty() {
        f = f.with_type(ev_type);
    }
    if !text.is_empty() {
        f = f.with_text(text);
    }
    f
}

async fn failed_page(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<FailedQuery>,
) -> Result<Html<String>, Trouble> {
    let page_no = q.page.unwrap_or(1).clamp(1, i64::MAX / PER_PAGE);
    let filter = filter_of(&q.ev_type, &q.text);
    let (total, events) = console
        .with_db(async |db| {
            snapshot::require_pgq(db).await?;
            if pgq_consumers::schema::installed_version(db).await?.is_none() {
                return Err(Usage(
                    "this database has no failed events: the framework's schema pgq_consumer is not installed".into(),
                )
                .into());
            }
            let total = failed::count_matching(db, &q.queue, &q.consumer, &filter).await?;
            let events = failed::list_matching(
                db,
                &q.queue,
                &q.consumer,
                &filter,
                Some(PER_PAGE),
                (page_no - 1) * PER_PAGE,
            )
            .await?;
            Ok((total, events))
        })
        .await?;
    let csrf = console
        .auth
        .as_ref()
        .and_then(|a| session(&headers).and_then(|id| a.csrf(&id)));
    let view = pages::FailedView {
        queue: &q.queue,
        consumer: &q.consumer,
        ev_type: &q.ev_type,
        text: &q.text,
        page: page_no,
        per_page: PER_PAGE,
        total,
        events: &events,
        csrf: csrf.as_deref(),
        notice: q.done.as_deref(),
    };
    Ok(page(
        &format!("failed events of {} on {}", q.consumer, q.queue),
        None,
        console.login_state(&headers),
        pages::failed(&view),
    ))
}

/// Refuses a POST that the browser says comes from another site.
fn same_origin(headers: &HeaderMap) -> Result<(), Trouble> {
    let refused = || {
        Trouble::Refused(
            StatusCode::FORBIDDEN,
            "Refused: the request comes from another site.".into(),
        )
    };
    // A browser says where a request comes from in Sec-Fetch-Site; older
    // ones only in Origin.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return if site == "same-origin" || site == "none" {
            Ok(())
        } else {
            Err(refused())
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if origin != format!("http://{host}") && origin != format!("https://{host}") {
            return Err(refused());
        }
    }
    Ok(())
}

async fn failed_write(State(console): State<Shared>, headers: HeaderMap, body: String) -> Result<Response, Trouble> {
    let Some(auth) = console.auth.as_ref() else {
        return Err(Trouble::Refused(
            StatusCode::FORBIDDEN,
            "Refused: this console is read-only (start it with --writes and a token to retry or delete).".into(),
        ));
    };
    same_origin(&headers)?;
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let field = |k: &str| {
        form.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let allowed = session(&headers).is_some_and(|id| auth.allows(&id, field("csrf")));
    if !allowed {
        return Err(Trouble::Refused(
            StatusCode::FORBIDDEN,
            "Refused: a write needs the token. Log in with it first (the session expired, or the form is not this \
             console's)."
                .into(),
        ));
    }
    let (queue, consumer) = (field("queue").to_string(), field("consumer").to_string());
    let mut ids = Vec::new();
    for (_, v) in form.iter().filter(|(k, _)| k == "id") {
        ids.push(
            v.parse::<i64>()
                .map_err(|_| Trouble::Refused(StatusCode::BAD_REQUEST, format!("{v:?} is not an event id.")))?,
        );
    }
    if ids.is_empty() {
        return Err(Trouble::Refused(
            StatusCode::BAD_REQUEST,
            "Select the failed events to retry or delete first.".into(),
        ));
    }
    let action = field("action").to_string();
    let done = console
        .with_db(async |db| match action.as_str() {
            "retry" => failed::retry(db, &queue, &consumer, &ids)
                .await
                .map(|n| format!("{n} failed event(s) put back into queue {queue} for consumer {consumer}"))
                .map_err(|e| failure::explain("retry", e.into())),
            "delete" => failed::delete(db, &queue, &consumer, &ids)
                .await
                .map(|n| format!("{n} failed event(s) deleted"))
                .map_err(|e| failure::explain("delete", e.into())),
            other => Err(Usage(format!("{other:?} is not an action (retry or delete)")).into()),
        })
        .await?;
    let back = format!(
        "/failed?{}",
        pages::query(&[
            ("queue", &queue),
            ("consumer", &consumer),
            ("type", field("type")),
            ("text", field("text")),
            ("done", &done),
        ])
    );
    Ok(Redirect::to(&back).into_response())
}

async fn login_page(State(console): State<Shared>, headers: HeaderMap) -> Result<Html<String>, Trouble> {
    if console.auth.is_none() {
        return Err(Trouble::Refused(
            StatusCode::NOT_FOUND,
            "This console is read-only: there is nothing to log in to.".into(),
        ));
    }
    Ok(page("log in", None, console.login_state(&headers), pages::login(false)))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(console): State<Shared>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, Trouble> {
    let Some(auth) = console.auth.as_ref() else {
        return Err(Trouble::Refused(
            StatusCode::NOT_FOUND,
            "This console is read-only: there is nothing to log in to.".into(),
        ));
    };
    same_origin(&headers)?;
    match auth.login(&form.token) {
        Some((id, _csrf)) => {
            let mut response = Redirect::to("/").into_response();
            let cookie = format!("{}={id}; HttpOnly; SameSite=Strict; Path=/", auth::COOKIE);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(response)
        }
        None => Ok((
            StatusCode::FORBIDDEN,
            page("log in", None, Some(false), pages::login(true)),
        )
            .into_response()),
    }
}

async fn logout(State(console): State<Shared>, headers: HeaderMap) -> Response {
    if let (Some(auth), Some(id)) = (console.auth.as_ref(), session(&headers)) {
        auth.logout(&id);
    }
    let mut response = Redirect::to("/").into_response();
    let cookie = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}
