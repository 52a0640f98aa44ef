//! `webhook` against a local HTTP server that fails some requests: delivery
//! of method, headers and body; retries with a doubling back-off; failed
//! after `max_attempts` with the status or error as reason; `retry all`
//! sends again.

use std::time::Duration;

use pgq_test_support::{Pgqd, TestDb};

use crate::loopback::{Answer, HttpServer};
use crate::support::program::Program;
use crate::support::{free_port, wait_for, Scratch};

const WEBHOOK: &str = env!("CARGO_BIN_EXE_webhook");

/// The lines of `failed` as (event id, reason).
async fn failed(webhook: &Program) -> Vec<(i64, String)> {
    let ran = webhook.ok(&["failed"]).await;
    ran.stdout
        .lines()
        .filter(|l| !l.starts_with("no failed events"))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].parse().expect("an event id"), cols[5].to_string())
        })
        .collect()
}

/// `enqueued event N: ...` -> N.
fn event_id(stdout: &str) -> i64 {
    stdout
        .strip_prefix("enqueued event ")
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no event id in {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_delivered_retried_with_backoff_and_failed_after_max_attempts() {
    let server = HttpServer::start().await;
    server.answer("/ok", Answer::status(200));
    server.answer(
        "/flaky",
        Answer {
            first: vec![503],
            ..Answer::status(204)
        },
    );
    server.answer("/down", Answer::status(500));
    server.answer(
        "/slow",
        Answer {
            delay: Duration::from_secs(5),
            ..Answer::status(200)
        },
    );
    let refused = format!("http://127.0.0.1:{}/nobody", free_port());

    let db = TestDb::create().await;
    let _pgqd = Pgqd::start(&db, 0.1);
    let dir = Scratch::new("webhook");
    let config = format!(
        "db = {dsn:?}\nqueue = \"webhook\"\nconsumer = \"webhook\"\npidfile = {pid:?}\nlogfile = {log:?}\n\
         delay = 0.1\n\n[settings]\nbackoff_base = 1\nmax_attempts = 3\ntimeout = 1\n",
        dsn = db.dsn(),
        pid = dir.join("webhook.pid").display().to_string(),
        log = dir.join("webhook.log").display().to_string(),
    );
    let webhook = Program::new(WEBHOOK, dir.path(), "webhook", &config);
    webhook.ok(&["install"]).await;

    // A user's mistakes are refused with a message and exit 1.
    for bad in [
        vec!["enqueue", "--url", "ftp://x/"],
        vec!["enqueue", "--url", "http://x/", "--header", "no colon"],
        vec!["enqueue", "--url", "http://x/", "--method", "NOT A METHOD"],
    ] {
        let ran = webhook.run(&bad).await;
        assert_eq!(ran.code, Some(1), "{bad:?}: {ran:?}");
        assert!(ran.stderr.starts_with("error: --"), "{bad:?}: {ran:?}");
    }

    let ok = event_id(
        &webhook
            .ok(&[
                "enqueue",
                "--url",
                &server.url("/ok"),
                "--header",
                "X-Token: abc",
                "--header",
                "Content-Type: application/json",
                "--body",
                r#"{"n": 1}"#,
            ])
            .await
            .stdout,
    );
    let flaky = event_id(
        &webhook
            .ok(&["enqueue", "--url", &server.url("/flaky"), "-X", "put"])
            .await
            .stdout,
    );
    let down = event_id(&webhook.ok(&["enqueue", "--url", &server.url("/down")]).await.stdout);
    let slow = event_id(&webhook.ok(&["enqueue", "--url", &server.url("/slow")]).await.stdout);
    let nobody = event_id(&webhook.ok(&["enqueue", "--url", &refused]).await.stdout);

    webhook.ok(&["start"]).await;

    // Delivered as asked, with the event id for the receiver.
    let got = wait_for("the /ok request", async || server.seen("/ok").pop()).await;
    assert_eq!(got.method, "POST", "{got:?}");
    assert_eq!(got.header("x-token"), Some("abc"), "{got:?}");
    assert_eq!(got.header("content-type"), Some("application/json"), "{got:?}");
    assert_eq!(got.header("webhook-id"), Some(ok.to_string().as_str()), "{got:?}");
    assert_eq!(got.body, r#"{"n": 1}"#);

    // Three events fail for good, each after three attempts.
    let gone = wait_for("three failed events", async || {
        let f = failed(&webhook).await;
        (f.len() == 3).then_some(f)
    })
    .await;
    let reason = |id: i64| {
        gone.iter()
            .find(|(e, _)| *e == id)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        reason(down),
        "HTTP 500 Internal Server Error (attempt 3 of 3)",
        "{gone:?}"
    );
    assert!(
        reason(slow).starts_with("timed out") && reason(slow).ends_with("(attempt 3 of 3)"),
        "{gone:?}"
    );
    let refused_reason = reason(nobody).to_lowercase();
    assert!(
        refused_reason.contains("connect") && refused_reason.ends_with("(attempt 3 of 3)"),
        "{gone:?}"
    );
    assert!(!gone.iter().any(|(e, _)| *e == ok || *e == flaky), "{gone:?}");

    // The flaky one was tried again and then done, with its method.
    let flaky_seen = server.seen("/flaky");
    assert_eq!(flaky_seen.len(), 2, "{flaky_seen:?}");
    assert!(flaky_seen.iter().all(|s| s.method == "PUT"));
    assert_eq!(server.seen("/ok").len(), 1, "a 2xx is not sent again");

    // The back-off doubles from backoff_base: 1 s, then 2 s (plus the
    // ticker's and the retry maintenance's latency, at most ~1 s each).
    let at: Vec<_> = server.seen("/down").iter().map(|s| s.at).collect();
    assert_eq!(at.len(), 3, "max_attempts = 3");
    let gaps = [at[1] - at[0], at[2] - at[1]];
    assert!(
        gaps[0] >= Duration::from_millis(900) && gaps[0] < Duration::from_secs(4),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(1900) && gaps[1] < Duration::from_secs(5),
        "{gaps:?}"
    );

    // `retry all` sends them again; /down answers now.
    server.answer("/down", Answer::status(200));
    let retried = webhook.ok(&["retry", "all"]).await;
    assert!(retried.stdout.starts_with("3 failed event(s) put back"), "{retried:?}");
    wait_for("/down sent again", async || {
        (server.seen("/down").len() == 4).then_some(())
    })
    .await;
    wait_for("/down no longer failed", async || {
        let f = failed(&webhook).await;
        (f.len() == 2 && !f.iter().any(|(e, _)| *e == down)).then_some(())
    })
    .await;

    let status = webhook.ok(&["status"]).await;
    assert!(status.stdout.contains("failed events: 2"), "{status:?}");
    webhook.ok(&["stop"]).await;
    let log = std::fs::read_to_string(dir.join("webhook.log")).unwrap_or_default();
    assert!(
        log.contains("trying again in 1.0s") && log.contains("trying again in 2.0s"),
        "{log}"
    );
}
