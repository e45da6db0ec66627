//! `--worker-sched`: the worker threads' scheduling policy, read from `/proc` while the server
//! serves.

use std::process::Command;

use crate::support::{self, Binary};

/// Each thread of `pid` whose name starts with `prefix`, with its policy (field 41 of its stat).
fn policies(pid: u32, prefix: &str) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        found.push((name, support::stat_field(&stat, 41)));
    }
    found.sort();
    found
}

/// Waits until every worker of `server` runs under `policy` (they set it as they start);
/// returns every worker's, and the acceptor's.
fn settled(server: &Binary, policy: i64) -> (Vec<(String, i64)>, i64) {
    let pid = server.child.id();
    support::wait_until("the workers' policy", || {
        let workers = policies(pid, "tcpool-worker");
        workers.len() == 2 && workers.iter().all(|(_, p)| *p == policy)
    });
    let acceptor = policies(pid, "tcpool-acceptor");
    (policies(pid, "tcpool-worker"), acceptor[0].1)
}

/// Echo still answers, byte for byte.
fn echoes(server: &Binary) {
    let mut stream = support::connect(server.addr);
    assert_eq!(support::round_trip(&mut stream, b"ping\n"), b"ping\n");
}

#[test]
fn workers_run_under_sched_batch_when_asked_and_nothing_else_does() {
    let server = Binary::serve(&["--workers", "2", "--worker-sched", "batch"]);
    let (workers, acceptor) = settled(&server, 3);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(acceptor, 0, "the acceptor keeps SCHED_OTHER");
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("worker-sched=batch")),
        "{:?}",
        server.stderr_lines()
    );
    echoes(&server);
}

#[test]
fn worker_sched_normal_leaves_the_workers_alone() {
    let server = Binary::serve(&["--workers", "2", "--worker-sched", "normal"]);
    echoes(&server);
    let (workers, acceptor) = settled(&server, 0);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(acceptor, 0);
}

#[test]
fn the_default_leaves_the_workers_alone_and_says_so() {
    let server = Binary::serve(&["--workers", "2"]);
    echoes(&server);
    let (workers, acceptor) = settled(&server, 0);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(acceptor, 0);
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("worker-sched=normal")),
        "{:?}",
        server.stderr_lines()
    );
}

#[test]
fn a_policy_chosen_from_outside_is_kept_and_said_so() {
    // `chrt --idle 0` starts the whole process under SCHED_IDLE, as an operator might; even
    // `--worker-sched batch` does not override it.
    let mut command = Command::new("chrt");
    command
        .args(["--idle", "0", support::tcpool_bin(), "serve", "--port", "0"])
        .args(["--workers", "2", "--worker-sched", "batch"])
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never");
    let server = Binary::launch(command);
    let (workers, acceptor) = settled(&server, 5);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(acceptor, 5);
    server.wait_stderr("the kept policy", |l| {
        l.contains("keep the scheduling policy") && l.contains("SCHED_IDLE")
    });
    echoes(&server);
}

#[test]
fn a_bad_policy_is_a_usage_error() {
    let out = Command::new(support::tcpool_bin())
        .args(["serve", "--port", "0", "--worker-sched", "fifo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--worker-sched"), "{stderr}");
    assert!(
        stderr.contains("batch") && stderr.contains("normal"),
        "{stderr}"
    );
}
