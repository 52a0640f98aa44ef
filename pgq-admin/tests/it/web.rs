//! The web console, driven in headless Chromium through WebDriver
//! (chromedriver; scripts/with-postgres.sh installs chromium and
//! chromium-driver when missing).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use pgq_test_support::{wait_for, Pgqd, TestDb};
use tokio_postgres::Client as Db;

use crate::support::{admin_json, consumer, framework_db, insert, ours, queue, Ours, Running};

const TOKEN: &str = "a-test-token-0123456789";
const PAYLOAD: &str = "<script>window.pwned = 1; document.title = 'pwned'</script>";

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pgq-admin serve` on a free port; its base URL.
fn console(dsn: &str, writes: bool) -> (Running, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgq-admin"));
    cmd.args([
        "-d",
        dsn,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--sample-every",
        "0.5",
        "--refresh-every",
        "1",
    ])
    .env_remove("PGQ_DB")
    .env_remove("PGQ_ADMIN_TOKEN")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if writes {
        cmd.arg("--writes").env("PGQ_ADMIN_TOKEN", TOKEN);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (Running::new(child), url)
}

/// chromedriver, and a headless Chromium session through it.
async fn browser() -> (Running, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/with-postgres.sh installs it)");
    let driver = Running::new(driver);
    wait_for("chromedriver to listen", Duration::from_secs(20), || async move {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,1100"]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// A POST the way a script or another site would send it: status code.
fn raw_post(base: &str, path: &str, body: &str, cookie: Option<&str>) -> u16 {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n{cookie}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Where the tests leave what a person looks at: `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A database with queue `orders` ticked by pgqd, a stopped consumer
/// `audit` registered after a first event, and our consumer `mailer`, which
/// has consumed 3 good events and stored the one whose data is [`PAYLOAD`]
/// as failed. Returns the failed event's id.
async fn scene() -> (TestDb, Db, Pgqd, Ours, i64) {
    let (db, client) = framework_db().await.unwrap();
    queue(&client, "orders").await.unwrap();
    queue(&client, "invoices").await.unwrap();
    let pgqd = Pgqd::start(&db, 0.1);
    insert(&client, "orders", "order", "primer").await.unwrap();
    wait_for("the primer to be ticked", Duration::from_secs(10), || async {
        let q = pgq::get_queue_info(&client, "orders").await.unwrap().unwrap();
        (q.ev_new == Some(0) && q.last_tick_id > Some(1)).then_some(())
    })
    .await;
    pgq::register_consumer(&client, "orders", "audit").await.unwrap();
    let mailer = ours(&db, &client, "orders", "mailer").await.unwrap();
    for i in 0..3 {
        insert(&client, "orders", "order", &format!("{{\"order\": {i}}}"))
            .await
            .unwrap();
    }
    let bad = insert(&client, "orders", "bad", PAYLOAD).await.unwrap();
    let dsn = db.dsn().to_string();
    wait_for("mailer's failed event", Duration::from_secs(20), || {
        let dsn = dsn.clone();
        async move {
            let list = admin_json(&dsn, &["consumers"]);
            let c = consumer(&list, "orders", "mailer")?;
            (c["failed"] == 1 && c["pending_events"] == 0).then_some(())
        }
    })
    .await;
    (db, client, pgqd, mailer, bad)
}

/// Clicks what `locator` finds. The dashboard's live refresh replaces its
/// main part every second: an element found just before a refresh is gone
/// when clicked ("stale"), and is found again in the new part.
async fn click(b: &Client, locator: Locator<'_>) {
    for _ in 0..20 {
        let found = b.wait().for_element(locator).await.expect("the element to click");
        match found.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
            Err(e) => panic!("click: {e:?}"),
        }
    }
    panic!("the element stayed stale through 20 refreshes");
}

/// The text of the cell `cell` in the dashboard's row of `queue`/`consumer`.
async fn cell(b: &Client, queue: &str, consumer: &str, cell: &str) -> Option<String> {
    let css = format!("#consumers tr[data-queue='{queue}'][data-consumer='{consumer}'] td.{cell}");
    b.find(Locator::Css(&css)).await.ok()?.text().await.ok()
}

/// The dashboard lists the queues and consumers with PgQ's figures, keeps
/// them live, draws the charts; a failed event whose data is a `<script>`
/// shows as text and runs nothing. A screenshot of the dashboard is left in
/// target/test-artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_right_figures_and_a_script_payload_stays_text() {
    let (db, client, _pgqd, _mailer, bad) = scene().await;
    let (_console, url) = console(db.dsn(), false);
    let (_driver, b) = browser().await;

    b.goto(&url).await.unwrap();
    assert_eq!(cell(&b, "orders", "audit", "pending").await.as_deref(), Some("4"));
    assert_eq!(cell(&b, "orders", "mailer", "pending").await.as_deref(), Some("0"));
    assert_eq!(cell(&b, "orders", "mailer", "failed").await.as_deref(), Some("1"));
    let queues: Vec<String> = {
        let mut v = Vec::new();
        for row in b.find_all(Locator::Css("#queues tbody tr")).await.unwrap() {
            v.push(row.attr("data-queue").await.unwrap().unwrap());
        }
        v
    };
    assert_eq!(queues, ["invoices", "orders"]);
    let ticking = b.find(Locator::Id("ticking")).await.unwrap().text().await.unwrap();
    assert!(ticking.contains("pgqd"), "{ticking}");
    assert!(
        b.source().await.unwrap().find(db.dsn()).is_none(),
        "the connection string is on the page"
    );

    // Live: a new event for the stopped consumer shows without reloading.
    insert(&client, "orders", "order", "late").await.unwrap();
    let b2 = b.clone();
    wait_for("the page to refresh itself", Duration::from_secs(15), || {
        let b = b2.clone();
        async move { (cell(&b, "orders", "audit", "pending").await.as_deref() == Some("5")).then_some(()) }
    })
    .await;
    // Charts: lines once two samples are in.
    let b3 = b.clone();
    wait_for("the charts to have lines", Duration::from_secs(15), || {
        let b = b3.clone();
        async move {
            let lines = b.find_all(Locator::Css("#consumers svg polyline")).await.ok()?;
            (lines.len() >= 4).then_some(())
        }
    })
    .await;
    let png = b.screenshot().await.unwrap();
    std::fs::write(artifacts().join("pgq-admin-dashboard.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    // The failed event, from the dashboard's link: the payload is text.
    click(&b, Locator::Css("#consumers tr[data-consumer='mailer'] td.failed a")).await;
    let data = b
        .wait()
        .for_element(Locator::Css(&format!("#failed tr[data-ev-id='{bad}'] td.data")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(data, PAYLOAD);
    let ran = b
        .execute("return [window.pwned === undefined, document.title];", vec![])
        .await
        .unwrap();
    assert_eq!(ran[0], true, "the payload ran");
    assert_ne!(ran[1], "pwned", "the payload ran");
    // Read-only: nothing to select, and a POST is refused.
    let boxes = b.find_all(Locator::Css("#failed input[type=checkbox]")).await.unwrap();
    assert!(!boxes[0].is_enabled().await.unwrap());
    let status = raw_post(
        &url,
        "/failed",
        &format!("queue=orders&consumer=mailer&action=delete&id={bad}"),
        None,
    );
    assert_eq!(status, 403);
    // Filtering.
    b.goto(&format!("{url}/failed?queue=orders&consumer=mailer&type=order"))
        .await
        .unwrap();
    let count = b.find(Locator::Id("count")).await.unwrap().text().await.unwrap();
    assert!(count.starts_with("0 failed"), "{count}");
    b.close().await.unwrap();
}

/// With --writes, a write without the token is refused, and so is one with
/// the session but not its CSRF token; logged in with the token, a failed
/// event retried from the page reaches the consumer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_retried_from_the_page_reaches_the_consumer_and_writes_need_the_token() {
    let (db, _client, _pgqd, mailer, bad) = scene().await;
    let (_console, url) = console(db.dsn(), true);
    let (_driver, b) = browser().await;
    let form = format!("queue=orders&consumer=mailer&action=retry&id={bad}");

    // No token, no session: refused.
    assert_eq!(raw_post(&url, "/failed", &form, None), 403);
    // A wrong token opens no session.
    b.goto(&format!("{url}/login")).await.unwrap();
    b.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("not-the-token-at-all")
        .await
        .unwrap();
    b.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        b.wait()
            .for_element(Locator::Id("notice"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "That is not the token."
    );
    // The token does.
    b.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    b.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Locator::Id("consumers")).await.unwrap();
    let session = b.get_named_cookie("pgq_admin_session").await.unwrap();
    let cookie = format!("pgq_admin_session={}", session.value());
    // The session without the form's CSRF token: refused.
    assert_eq!(raw_post(&url, "/failed", &form, Some(&cookie)), 403);
    assert_eq!(
        raw_post(&url, "/failed", &format!("{form}&csrf=guess"), Some(&cookie)),
        403
    );
    assert_eq!(
        admin_json(db.dsn(), &["failed", "orders", "mailer"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    b.goto(&format!("{url}/failed?queue=orders&consumer=mailer"))
        .await
        .unwrap();
    b.find(Locator::Css(&format!(
        "#failed tr[data-ev-id='{bad}'] input[type=checkbox]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    b.find(Locator::Id("retry")).await.unwrap().click().await.unwrap();
    let notice = b
        .wait()
        .for_element(Locator::Id("notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.starts_with("1 failed event(s) put back"), "{notice}");
    wait_for(
        "the retried event to reach mailer again",
        Duration::from_secs(20),
        || {
            let seen = mailer.seen.lock().unwrap().clone();
            async move {
                seen.iter()
                    .any(|(id, retry, _)| *id == bad && *retry == 1)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        admin_json(db.dsn(), &["failed", "orders", "mailer"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    b.close().await.unwrap();
}
