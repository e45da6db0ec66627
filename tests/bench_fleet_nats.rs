//! `tcpool bench --fleet` driving three `tcpool bench agent` processes through a real
//! `nats-server` on a free loopback port, against a local server: the split, the merge, the
//! clocks, a lost agent, the allow-list, the token and `--fail-if`.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpool::Config;

use crate::bench_fleet::{Scratch, merge};
use crate::cluster::Nats;
use crate::support::*;

const TOKEN: &str = "fleet-test-token-0123456789abcdef";

/// A broker, a token file and agents, each a process, all killed on drop.
pub(crate) struct Fleet {
    /// Kept for its drop: the broker lives as long as the fleet.
    _broker: Nats,
    url: String,
    agents: Vec<(String, Child)>,
    dir: Scratch,
}

impl Fleet {
    pub(crate) fn new(name: &str) -> Fleet {
        let broker = Nats::start();
        let dir = Scratch::new(name);
        std::fs::write(dir.0.join("token"), TOKEN).unwrap();
        Fleet {
            url: broker.url(),
            _broker: broker,
            agents: Vec::new(),
            dir,
        }
    }

    fn token(&self) -> String {
        self.dir.0.join("token").to_str().unwrap().to_owned()
    }

    /// Starts agent `name` (its clock offset by `offset` s) and waits until it waits for work.
    pub(crate) fn agent(&mut self, name: &str, offset: f64, extra: &[&str]) {
        let log = self.dir.0.join(format!("{name}.log"));
        let child = Command::new(tcpool_bin())
            .args([
                "bench",
                "agent",
                "--nats",
                &self.url,
                "--fleet-token-file",
                &self.token(),
                "--name",
                name,
            ])
            .args(extra)
            .env("TCPOOL_TEST_CLOCK_OFFSET", offset.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.agents.push((name.to_owned(), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log(name).contains("waiting for work") {
            assert!(
                Instant::now() < deadline,
                "agent {name} did not start: {}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn three(name: &str) -> Fleet {
        let mut fleet = Fleet::new(name);
        fleet.agent("a", 0.0, &[]);
        // A machine whose clock is 3 s ahead.
        fleet.agent("b", 3.0, &[]);
        fleet.agent("c", 0.0, &[]);
        fleet
    }

    /// `tcpool bench TARGET --fleet URL --fleet-token-file T ARGS...`.
    pub(crate) fn bench(&self, target: &str, args: &[&str]) -> Output {
        Command::new(tcpool_bin())
            .args([
                "bench",
                target,
                "--fleet",
                &self.url,
                "--fleet-token-file",
                &self.token(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn kill(&mut self, name: &str) {
        let (_, child) = self.agents.iter_mut().find(|(n, _)| n == name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_fleet_splits_exactly_and_merges_as_bench_merge_does() {
    let server = TestServer::start(Config::default());
    let fleet = Fleet::three("fleet-split");
    let kept = fleet.dir.0.join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    let out = fleet.bench(
        &server.addr.to_string(),
        &[
            "--agents",
            "3",
            "-c",
            "10",
            "-n",
            "3001",
            "--send",
            "{conn} {seq}\\n",
            "--until",
            "\\n",
            "--json",
            "--keep-reports",
            kept.to_str().unwrap(),
            "--fail-if",
            "errors<1,p50<100s",
        ],
    );
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The fleet's totals are one run's plan: 10 connections, 3001 messages.
    assert_eq!(report["messages"], 3001);
    let agents = report["fleet"]["agents"].as_array().unwrap();
    let column = |key: &str| {
        agents
            .iter()
            .map(|a| a[key].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(column("connections"), [4, 3, 3]);
    assert_eq!(column("conn_offset"), [0, 4, 7]);
    // One run gives connection i 300 messages, and one more to connection 0.
    assert_eq!(column("messages_asked"), [1201, 900, 900]);
    assert_eq!(column("messages"), [1201, 900, 900]);
    // Agent b's clock is 3 s ahead; it started with the others all the same.
    let b = &agents[1];
    assert!(
        (b["clock_offset_s"].as_f64().unwrap() - 3.0).abs() < 0.05,
        "{b}"
    );
    let skew = report["fleet"]["skew_s"].as_f64().unwrap();
    assert!(skew < 0.005, "starts {skew} s apart");
    // The same percentiles as `bench merge` of the agents' own reports.
    let files: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            kept.join(format!("agent-{n}.json"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let (code, merged, _) = merge(&[&["--json"], &files[..]].concat());
    assert_eq!(code, 0);
    let merged: Value = serde_json::from_str(&merged).unwrap();
    assert_eq!(merged["latency_us"], report["latency_us"]);
    assert_eq!(merged["messages"], report["messages"]);
    assert_eq!(merged["latency_histogram"], report["latency_histogram"]);
}

#[test]
fn fail_if_judges_the_merged_report_with_its_own_exit_code() {
    let server = TestServer::start(Config::default());
    let fleet = Fleet::three("fleet-fail-if");
    let out = fleet.bench(
        &server.addr.to_string(),
        &[
            "--agents",
            "3",
            "-c",
            "6",
            "-n",
            "600",
            "--fail-if",
            "p50<1us,errors<0.1%",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("threshold p50<1us: FAILED: it was"),
        "{stderr}"
    );
    assert!(stderr.contains("threshold errors<0.1%: passed"), "{stderr}");
    // A single run is judged the same way.
    let single = Command::new(tcpool_bin())
        .args([
            "bench",
            &server.addr.to_string(),
            "-c",
            "2",
            "-n",
            "100",
            "--fail-if",
            "p99<100s,errors<1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        single.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    assert!(String::from_utf8_lossy(&single.stderr).contains("threshold p99<100s: passed"));
}

#[test]
fn a_killed_agent_leaves_a_partial_report_naming_it() {
    let server = TestServer::start(Config::default());
    let mut fleet = Fleet::three("fleet-lost");
    let target = server.addr.to_string();
    let url = fleet.url.clone();
    let token = fleet.token();
    let coordinator = Command::new(tcpool_bin())
        .args([
            "bench",
            &target,
            "--fleet",
            &url,
            "--fleet-token-file",
            &token,
            "--agents",
            "3",
            "-c",
            "6",
            "-d",
            "4",
            "--rate",
            "600",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once c has its work: two seconds of lead, then a second and a half of the 4 s window.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fleet.log("c").contains("connection(s) from #") {
        assert!(
            Instant::now() < deadline,
            "c got no work: {}",
            fleet.log("c")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(3500));
    fleet.kill("c");
    let out = coordinator.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let f = &report["fleet"];
    assert_eq!(f["partial"], true);
    assert_eq!(f["lost"][0]["agent"], "c");
    assert!(f["lost"][0]["seconds"].as_u64().unwrap() >= 1, "{f}");
    // The others' reports make the totals.
    assert_eq!(report["generators"].as_array().unwrap().len(), 2);
}

#[test]
fn an_agent_refuses_a_target_outside_its_allow_list() {
    let server = TestServer::start(Config::default());
    let mut fleet = Fleet::new("fleet-allow");
    fleet.agent("far", 0.0, &["--allow-target", "10.0.0.0/8"]);
    let out = fleet.bench(&server.addr.to_string(), &["--agents", "far", "-n", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent far refused the work"), "{stderr}");
    assert!(
        stderr.contains("outside this agent's --allow-target (10.0.0.0/8)"),
        "{stderr}"
    );
}

#[test]
fn work_without_the_token_is_ignored() {
    let server = TestServer::start(Config::default());
    let mut fleet = Fleet::new("fleet-token");
    fleet.agent("a", 0.0, &[]);
    let wrong = fleet.dir.0.join("wrong");
    std::fs::write(&wrong, "another-fleet-token-0123456789").unwrap();
    let out = Command::new(tcpool_bin())
        .args([
            "bench",
            &server.addr.to_string(),
            "--fleet",
            &fleet.url,
            "--fleet-token-file",
            wrong.to_str().unwrap(),
            "--agents",
            "1",
            "--agents-wait",
            "1.5",
            "-n",
            "10",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("found 0 idle agent(s)"), "{stderr}");
    assert!(
        fleet.log("a").contains("ignored a message"),
        "{}",
        fleet.log("a")
    );
    // The agent is still there, and takes signed work.
    let out = fleet.bench(&server.addr.to_string(), &["--agents", "1", "-n", "10"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
