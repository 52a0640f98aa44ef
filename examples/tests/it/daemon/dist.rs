//! The systemd unit, the logrotate file and the Kubernetes manifest shipped in
//! `examples/dist/`, tested with the real tools: logrotate rotates testq's log for
//! real, the unit passes `systemd-analyze verify` (where installed), its command
//! lines drive testq as systemd would (its notify protocol is tested in
//! `ops::systemd`), and the manifest's config is one testq accepts, with probes on
//! the endpoint's paths and a grace period longer than the stop timeout.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::process::{alive, signal};
use crate::support::testq::{Testq, TestqDb, CONSUMER, TESTQ};
use crate::support::PATIENCE;

/// The paths the shipped files name, replaced by a test's own.
const SHIPPED_BINARY: &str = "/usr/local/bin/testq";
const SHIPPED_CONFIG: &str = "/etc/testq/testq.toml";
const SHIPPED_LOG: &str = "/var/log/testq/testq.log";

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A shipped file with its paths pointing at the test's binary, config and log.
fn localized(text: &str, testq: &Testq) -> String {
    text.replace(SHIPPED_BINARY, TESTQ)
        .replace(SHIPPED_CONFIG, &testq.config_path().display().to_string())
        .replace(SHIPPED_LOG, &testq.logfile().display().to_string())
}

/// A tool from the system's directories, which a non-root user's PATH may miss.
fn system_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs a system tool to its end; it must succeed. Returns what it said on
/// its standard error.
fn run_tool(tool: &Path, args: &[&OsStr]) -> String {
    let ran = std::process::Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let said = String::from_utf8_lossy(&ran.stderr).into_owned();
    assert!(ran.status.success(), "{} {args:?} failed: {said}", tool.display());
    said
}

/// The unit's `[Section] Key=value` lines (the last of a repeated key wins).
fn unit_keys(text: &str) -> HashMap<(String, String), String> {
    let mut section = String::new();
    let mut keys = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `Key=value` in [{section}]: {line}"));
        assert!(!section.is_empty(), "a key before any section: {line}");
        keys.insert((section.clone(), key.trim().to_string()), value.trim().to_string());
    }
    keys
}

fn service_key<'a>(keys: &'a HashMap<(String, String), String>, key: &str) -> &'a str {
    keys.get(&("Service".to_string(), key.to_string()))
        .unwrap_or_else(|| panic!("testq.service has no {key} in [Service]"))
}

#[tokio::test]
async fn the_shipped_logrotate_file_rotates_the_log_and_the_daemon_writes_a_new_one() {
    let logrotate = system_tool("logrotate").unwrap_or_else(|| {
        panic!(
            "logrotate is not installed: `apt-get install logrotate` (scripts/test.sh installs it \
             when missing)"
        )
    });
    let testq = TestqDb::installed("logrotate").await;
    let pid = testq.start().await;
    let conf = testq.path("logrotate.conf");
    std::fs::write(&conf, localized(&repo_file("dist/testq.logrotate"), &testq)).expect("write logrotate.conf");

    let state = testq.path("logrotate.state");
    run_tool(
        &logrotate,
        &[
            "-v".as_ref(),
            "-f".as_ref(),
            "-s".as_ref(),
            state.as_ref(),
            conf.as_ref(),
        ],
    );

    // delaycompress: the first rotation stays plain text.
    let rotated = std::fs::read_to_string(testq.path("testq.log.1")).expect("the rotated log");
    assert!(rotated.contains(&format!("{CONSUMER} started, pid {pid}")), "{rotated}");
    // nocreate: the new file is the daemon's, created when postrotate's reload
    // made it reopen its log.
    testq.wait_for_log("NOTICE reloaded: log level NOTICE").await;
    let ids = testq.produce_plain_batch(1).await;
    testq
        .wait_for_log(&format!("[{pid}] NOTICE done: event {} ", ids[0]))
        .await;
    assert!(!rotated.contains("reloaded"), "{rotated}");
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn the_shipped_systemd_unit_verifies_and_runs_the_command_line_the_readme_documents() {
    let unit = repo_file("dist/testq.service");
    let keys = unit_keys(&unit);
    assert_eq!(service_key(&keys, "Type"), "notify");
    assert_eq!(service_key(&keys, "NotifyAccess"), "main");
    assert_eq!(service_key(&keys, "WatchdogSec"), "60s");
    // Above the default stop_timeout (30 s): testq exits before systemd's SIGKILL.
    assert_eq!(service_key(&keys, "TimeoutStopSec"), "45s");
    assert_eq!(service_key(&keys, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(service_key(&keys, "Restart"), "on-failure");
    let exec_start = service_key(&keys, "ExecStart");
    assert_eq!(exec_start, format!("{SHIPPED_BINARY} -c {SHIPPED_CONFIG} run"));

    let readme = repo_file("../README.md");
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .collect();
    assert_eq!(documented, [exec_start], "README's ExecStart line is the unit's");

    let Some(analyze) = system_tool("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: testq.service is checked without it");
        return;
    };
    let testq = TestqDb::new("systemd_verify").await;
    // The unit as installed for this test (verify wants ExecStart's binary to exist).
    let path = testq.path("testq.service");
    std::fs::write(&path, localized(&unit, &testq)).expect("write testq.service");
    let said = run_tool(&analyze, &["verify".as_ref(), path.as_ref()]);
    assert!(!said.contains("testq.service"), "systemd-analyze verify: {said}");
}

#[tokio::test]
async fn the_units_command_lines_run_testq_in_the_foreground_reload_it_and_stop_it_with_exit_0() {
    let keys = unit_keys(&repo_file("dist/testq.service"));
    let testq = TestqDb::installed("systemd_run").await;
    let exec_start = localized(service_key(&keys, "ExecStart"), &testq);
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    let mut child = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run the unit's ExecStart");
    let pid = child.id().expect("the pid of ExecStart");
    testq.wait_for_log(&format!("{CONSUMER} started, pid {pid}")).await;
    assert_eq!(
        testq.pid(),
        Some(pid),
        "`run` holds the pidfile, so `testq reload` finds it"
    );

    // `systemctl reload`: ExecReload with $MAINPID.
    let exec_reload = service_key(&keys, "ExecReload").replace("$MAINPID", &pid.to_string());
    let argv: Vec<&str> = exec_reload.split_whitespace().collect();
    let reloaded = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .expect("run the unit's ExecReload");
    assert!(reloaded.success());
    testq.wait_for_log("NOTICE reloaded: log level NOTICE").await;

    // `systemctl stop`: SIGTERM; a clean stop exits 0, so Restart=on-failure
    // leaves it stopped.
    signal(pid, "TERM");
    let exited = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("testq exits after SIGTERM")
        .expect("wait for testq");
    assert_eq!(exited.code(), Some(0), "{}", testq.log());
    assert!(!alive(pid));
    assert!(testq.log().contains(&format!("{CONSUMER} stopped, pid {pid}")));
}

/// The lines of the block scalar `key: |` in a YAML text, unindented.
fn yaml_block(text: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines.next().unwrap_or_else(|| panic!("no `{key}: |` block"));
    let indent = head.len() - head.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of the first `key: value` line of a YAML text.
fn yaml_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` in the manifest"))
        .trim_matches('"')
}

#[tokio::test]
async fn the_kubernetes_manifests_config_runs_testq_with_probes_on_its_endpoint_and_a_grace_period_past_stop_timeout() {
    let manifest = repo_file("dist/testq.k8s.yaml");
    let testq = TestqDb::installed("k8s_manifest").await;
    // The ConfigMap's config, as the pod has it; the database from PGQ_DB, as the Secret gives it.
    let config = yaml_block(&manifest, "testq.toml");
    let parsed: toml::Table = toml::from_str(&config).expect("the ConfigMap's testq.toml is TOML");
    testq.write_config(&config);
    let checked = testq.run_with(&["check"], &[("PGQ_DB", testq.db.dsn())]).await;
    assert_eq!(
        checked.code,
        Some(0),
        "testq check with the manifest's config: {checked:?}"
    );

    let stop_timeout = parsed["stop_timeout"].as_integer().expect("stop_timeout is set");
    let grace: i64 = yaml_value(&manifest, "terminationGracePeriodSeconds")
        .parse()
        .expect("a number");
    assert!(
        grace >= stop_timeout + 10,
        "grace {grace} s, stop_timeout {stop_timeout} s"
    );
    let listen = parsed["http"]["listen"].as_str().expect("[http] listen");
    let port = listen.rsplit(':').next().expect("a port");
    assert_eq!(yaml_value(&manifest, "containerPort"), port);
    let probes: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path: "))
        .collect();
    assert_eq!(probes, ["/health/live", "/health/ready"], "liveness, then readiness");
    assert!(manifest.contains("livenessProbe:") && manifest.contains("readinessProbe:"));
    assert!(manifest.contains("secretKeyRef:") && manifest.contains("- name: PGQ_DB"));
    assert!(
        !config.contains("password"),
        "the password is in the Secret, not in the config"
    );
    assert_eq!(
        yaml_value(&manifest, "args"),
        r#"["-c", "/etc/testq/testq.toml", "run"]"#
    );
    assert_eq!(yaml_value(&manifest, "mountPath"), "/etc/testq");
}
