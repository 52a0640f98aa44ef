//! The metrics, scraped by a real Prometheus server (Debian's `prometheus`,
//! which `scripts/test.sh` installs when missing) started by the test on a
//! free port with a config naming the daemon's endpoint; the series' values
//! are read back through Prometheus' HTTP API. `promtool check metrics`
//! passes on what the endpoint serves, which shows no connection string.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::testq::TestqDb;
use crate::support::{free_port, poll, Scratch};

use super::web;

/// A Prometheus server of the test's own; killed when dropped.
struct Prometheus {
    address: String,
    _child: tokio::process::Child,
    log: PathBuf,
}

/// A program of Debian's `prometheus` package.
fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is missing: install Debian's `prometheus` package (scripts/test.sh does)"))
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second.
    fn start(dir: &Scratch, targets: &[String]) -> Prometheus {
        let port = free_port();
        let listed: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pgq\n    \
             static_configs:\n      - targets: [{}]\n",
            listed.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("prometheus.log");
        let child = tokio::process::Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            address: format!("127.0.0.1:{port}"),
            _child: child,
            log,
        }
    }

    /// The value of the instant query `query`, when it has exactly one series.
    async fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let answer = web::get(&self.address, &path).await?;
        let json: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        let result = json["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until `query` gives `expected`.
    async fn wait_for(&self, query: &str, expected: f64) {
        let log = || {
            format!(
                "\n--- prometheus log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        };
        poll(&format!("Prometheus says {query} = {expected}"), log, async || {
            (self.value(query).await == Some(expected)).then_some(())
        })
        .await;
    }
}

/// Percent-encodes a query for a URL.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `[http]` of testq's config.
fn http(address: &str) -> toml::Table {
    let mut table = toml::Table::new();
    table.insert("listen".into(), address.into());
    table.insert("refresh_period".into(), 0.2.into());
    table
}

#[tokio::test]
async fn prometheus_scrapes_the_daemon_and_its_series_count_the_events_failed_and_retried() {
    let mut testq = TestqDb::installed("prometheus_scrape").await;
    let endpoint = format!("127.0.0.1:{}", free_port());
    testq.set("http", http(&endpoint));
    testq.start().await;
    let server_dir = Scratch::new("prometheus_server");
    let prometheus = Prometheus::start(&server_dir, std::slice::from_ref(&endpoint));

    let ids = testq
        .produce_batch(&["plain", "plain", "fail", "plain", "retry", "plain"])
        .await;
    testq.wait_for_log_n("done: event", 4).await;
    testq.requeue_due_retries(1).await;
    testq.wait_for_log_n("done: event", 5).await;
    assert_eq!(testq.done().await.len(), 5, "{ids:?}");

    let on = r#"job="pgq",queue="testq",consumer="testq""#;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_events_total{{{on},outcome="ok"}}"#), 5.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_events_total{{{on},outcome="failed"}}"#), 1.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_events_total{{{on},outcome="retry"}}"#), 1.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_batches_total{{{on},result="finished"}}"#), 2.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_event_duration_seconds_count{{{on}}}"#), 7.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_batch_duration_seconds_count{{{on}}}"#), 2.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_failed_events{{{on}}}"#), 1.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_pending_events{{{on}}}"#), 0.0)
        .await;
    prometheus
        .wait_for(&format!(r#"pgq_consumer_connection_up{{{on},database="queue"}}"#), 1.0)
        .await;
    prometheus
        .wait_for(r#"pgq_build_info{job="pgq",program="testq"}"#, 1.0)
        .await;
    prometheus.wait_for(r#"up{job="pgq"}"#, 1.0).await;

    // What the endpoint serves passes promtool, and shows no connection string.
    let metrics = web::get(&endpoint, "/metrics").await.expect("GET /metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.headers.contains("text/plain; version=0.0.4"),
        "{}",
        metrics.headers
    );
    let mut promtool = std::process::Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), metrics.body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        metrics.body
    );
    let dsn = testq.db.dsn().to_string();
    assert!(
        !metrics.body.contains(&dsn) && !metrics.body.contains("host="),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn the_endpoint_serves_only_its_three_paths_and_get() {
    let mut testq = TestqDb::installed("http_paths").await;
    let endpoint = format!("127.0.0.1:{}", free_port());
    testq.set("http", http(&endpoint));
    testq.start().await;
    let live = web::get(&endpoint, "/health/live").await.expect("live");
    assert_eq!((live.status, live.body.as_str()), (200, r#"{"status":"live"}"#));
    assert!(live.headers.contains("application/json"), "{}", live.headers);
    let ready = web::get(&endpoint, "/health/ready").await.expect("ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, r#"{"status":"ready"}"#));
    assert!(!format!("{live:?}{ready:?}").contains("host="));
    for path in [
        "/",
        "/metrics/",
        "/health",
        "/health/live/x",
        "/config",
        "/../metrics?x=1",
    ] {
        let answer = web::get(&endpoint, path).await.expect("an answer");
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        for path in ["/metrics", "/health/live", "/health/ready"] {
            let answer = web::request(&endpoint, method, path).await.expect("an answer");
            assert_eq!(answer.status, 405, "{method} {path}: {answer:?}");
        }
    }
    let head = web::request(&endpoint, "HEAD", "/metrics").await.expect("HEAD");
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn sub_consumers_of_one_config_each_serve_their_metrics_on_the_address_given_by_http_listen() {
    let mut testq = TestqDb::new("http_subconsumers").await;
    // The config's address is taken by the first; each gets its own with --http-listen.
    let shared = format!("127.0.0.1:{}", free_port());
    testq.set("http", http(&shared));
    testq.ok(&["install", "--subconsumer", "a"]).await;
    testq.ok(&["register", "--subconsumer", "b"]).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.extend(testq.produce_batch(&["plain"; 3]).await);
    }
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    testq.ok(&["start", "--subconsumer", "a", "--http-listen", &a]).await;
    testq.ok(&["start", "--subconsumer", "b", "--http-listen", &b]).await;
    // A third on the address the other two left: it may not start on a taken one.
    let clash = testq.run(&["start", "--subconsumer", "c", "--http-listen", &a]).await;
    assert_eq!(clash.code, Some(1), "{clash:?}");
    assert!(clash.stderr.contains(&format!("cannot listen on {a}")), "{clash:?}");
    // An address that is none is the option's mistake, not the config file's.
    let wrong = testq
        .run(&["start", "--subconsumer", "c", "--http-listen", "nowhere"])
        .await;
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert!(wrong.stderr.contains("--http-listen is \"nowhere\""), "{wrong:?}");
    assert!(!wrong.stderr.contains("config file"), "{wrong:?}");

    testq
        .wait_until("every event is done", async || testq.done().await.len() == ids.len())
        .await;
    let mut finished = 0.0;
    for (sub, endpoint) in [("a", &a), ("b", &b)] {
        let metrics = web::get(endpoint, "/metrics").await.expect("GET /metrics").body;
        let batches = web::sample(
            &metrics,
            "pgq_consumer_batches_total",
            &[("subconsumer", sub), ("result", "finished")],
        )
        .unwrap_or_else(|| panic!("{sub}'s batches: {metrics}"));
        finished += batches;
        let other = if sub == "a" { "b" } else { "a" };
        assert!(!metrics.contains(&format!("subconsumer=\"{other}\"")), "{metrics}");
    }
    assert_eq!(
        finished, 6.0,
        "every batch counted once, by the sub-consumer that did it"
    );
    assert_eq!(testq.done().await, ids, "each event once");
}

#[tokio::test]
async fn the_embedded_ticker_and_pgq_ticker_show_their_lead_and_their_ticks() {
    // A consumer with [ticker]: its endpoint shows it leads and ticks.
    let mut testq = TestqDb::installed("http_ticker").await;
    let endpoint = format!("127.0.0.1:{}", free_port());
    let mut ticker = toml::Table::new();
    ticker.insert("enabled".into(), true.into());
    ticker.insert("ticker_period".into(), 0.2.into());
    testq.set("http", http(&endpoint)).set("ticker", ticker);
    pgq::set_queue_config(&testq.client, "testq", "ticker_max_lag", "0.2")
        .await
        .expect("set_queue_config");
    testq.start().await;
    let ids = testq.produce(&["plain", "plain"]).await;
    testq
        .wait_until("the ticker's events are done", async || testq.done().await == ids)
        .await;
    let metrics = web::get(&endpoint, "/metrics").await.expect("metrics").body;
    assert_eq!(web::sample(&metrics, "pgq_ticker_leader", &[]), Some(1.0), "{metrics}");
    assert!(
        web::sample(&metrics, "pgq_ticker_ticks_total", &[]).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    testq
        .wait_until("the age of the last tick is read", async || {
            let metrics = web::get(&endpoint, "/metrics")
                .await
                .map(|a| a.body)
                .unwrap_or_default();
            web::sample(&metrics, "pgq_queue_last_tick_age_seconds", &[]).is_some_and(|age| age < 30.0)
        })
        .await;
    testq.ok(&["stop"]).await;

    // pgq-ticker, for the same database: a `database` label.
    let dir = Scratch::new("http_pgq_ticker");
    let dsn = pgq_test_support::server_dsn();
    let base: Vec<&str> = dsn.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).collect();
    let endpoint = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "base_db = \"{}\"\ndatabases = [\"{}\"]\nlogfile = \"{}\"\npidfile = \"{}\"\n\
         [ticker]\nticker_period = 0.2\n[http]\nlisten = \"{endpoint}\"\n",
        base.join(" "),
        testq.db.name(),
        dir.join("pgq-ticker.log").display(),
        dir.join("pgq-ticker.pid").display(),
    );
    let program =
        crate::support::program::Program::new(env!("CARGO_BIN_EXE_pgq-ticker"), dir.path(), "pgq-ticker", &config);
    program.ok(&["start"]).await;
    let ids = testq.produce(&["plain"]).await;
    let on = [("database", testq.db.name())];
    testq
        .wait_until("pgq-ticker leads and ticks", async || {
            let metrics = web::get(&endpoint, "/metrics")
                .await
                .map(|a| a.body)
                .unwrap_or_default();
            web::sample(&metrics, "pgq_ticker_leader", &on) == Some(1.0)
                && web::sample(&metrics, "pgq_ticker_ticks_total", &on).is_some_and(|n| n >= 1.0)
        })
        .await;
    let ready = web::get(&endpoint, "/health/ready").await.expect("ready");
    assert_eq!(ready.status, 200);
    let metrics = web::get(&endpoint, "/metrics").await.expect("metrics").body;
    assert_eq!(
        web::sample(&metrics, "pgq_build_info", &[("program", "pgq-ticker")]),
        Some(1.0)
    );
    program.ok(&["stop"]).await;
    assert!(!ids.is_empty());
}
