//! Files that are not what they seem, through the real `testq`: a log file
//! that cannot be opened, a pidfile that is a symbolic link, and
//! sub-consumer and consumer names that would make file names or log lines
//! of something else. Each is refused with a clear message, exit 1, before
//! anything is written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::testq::Testq;

/// The names in a directory.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_log_file_that_cannot_be_opened_makes_start_and_run_fail_naming_it_and_why() {
    let mut testq = Testq::new("bad_logfile", "host=127.0.0.1 port=1", "q", "c");
    let dir = testq.path("");
    let cases: [(PathBuf, &str); 3] = [
        // /proc takes no new files, not even from root.
        (
            PathBuf::from(format!("/proc/pgq-it-{}.log", std::process::id())),
            "No such file",
        ),
        (dir.clone(), "is a directory"),
        (dir.join("no-such-dir/testq.log"), "does not exist"),
    ];
    for (logfile, why) in cases {
        testq.set("logfile", logfile.display().to_string());
        for command in [&["start"][..], &["run"], &["run", "--once"]] {
            let ran = testq.run(command).await;
            let what = format!("{} {command:?}", logfile.display());
            assert_eq!(ran.code, Some(1), "{what}: {ran:?}");
            assert!(!ran.stdout.contains("started"), "{what}: {ran:?}");
            assert!(
                ran.stderr
                    .contains(&format!("cannot open log file {}", logfile.display())),
                "{what}: names the file: {ran:?}"
            );
            assert!(ran.stderr.contains(why), "{what}: says why: {ran:?}");
            assert_eq!(testq.pid(), None, "{what}: no daemon runs");
            assert!(!testq.pidfile().exists(), "{what}: no pidfile is left");
        }
    }
    assert!(!dir.join("no-such-dir").exists(), "no directory was made for the log");
}

#[tokio::test]
async fn a_pidfile_that_is_a_symbolic_link_is_refused_and_what_it_points_at_is_left_alone() {
    let testq = Testq::new("symlink_pidfile", "host=127.0.0.1 port=1", "q", "c");
    let precious = testq.path("precious.txt");
    std::fs::write(&precious, "keep me\n").expect("write the target");
    std::os::unix::fs::symlink(&precious, testq.pidfile()).expect("make the link");
    for command in [&["start"][..], &["run", "--once"], &["status"], &["stop"]] {
        let ran = testq.run(command).await;
        assert_eq!(ran.code, Some(1), "{command:?}: {ran:?}");
        assert!(
            ran.stderr
                .contains(&format!("pidfile {} is a symbolic link", testq.pidfile().display())),
            "{command:?}: {ran:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&precious).expect("the target"),
            "keep me\n",
            "{command:?}: the link's target is untouched"
        );
    }
    assert!(testq.pidfile().is_symlink(), "the link is left as it was");
}

#[tokio::test]
async fn sub_consumer_names_that_would_escape_their_directory_or_split_log_lines_are_refused_before_anything_is_written(
) {
    let mut testq = Testq::new("bad_subconsumer", "host=127.0.0.1 port=1", "q", "c");
    let dir = testq.path("");
    let parent = dir.parent().expect("the scratch directory has a parent").to_path_buf();
    let before = listing(&dir);
    let long = "x".repeat(65);
    let names = [
        "d/../../outside/evil",
        "a/b",
        "line\nbreak",
        "tab\there",
        "",
        ".",
        "..",
        long.as_str(),
    ];
    for name in names {
        for command in [&["start"][..], &["run", "--once"], &["stop"], &["register"]] {
            let mut args = vec!["--subconsumer", name];
            args.extend_from_slice(command);
            let ran = testq.run(&args).await;
            let what = format!("{name:?} {command:?}");
            assert_eq!(ran.code, Some(1), "{what}: {ran:?}");
            assert!(
                ran.stderr.contains("--subconsumer: the sub-consumer name")
                    && ran.stderr.contains(&format!("{name:?}")),
                "{what}: {ran:?}"
            );
            assert_eq!(ran.stderr.lines().count(), 1, "{what}: one line: {ran:?}");
        }
    }
    assert_eq!(listing(&dir), before, "nothing was written");
    assert!(!parent.join("outside").exists(), "nothing was written beside it");

    // The same names in the config file, and a consumer name with a newline.
    for name in ["a/b", "line\nbreak", ""] {
        testq.set("subconsumer", name);
        let ran = testq.run(&["check"]).await;
        assert_eq!(ran.code, Some(1), "{name:?}: {ran:?}");
        assert!(ran.stderr.contains("`subconsumer`"), "{name:?}: {ran:?}");
    }
    testq.unset("subconsumer").set("consumer", "c\nNOTICE forged");
    let ran = testq.run(&["check"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("`consumer`") && ran.stderr.contains("control character"),
        "{ran:?}"
    );
    assert_eq!(listing(&dir), before, "nothing was written");
}
