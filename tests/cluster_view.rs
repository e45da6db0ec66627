//! One view of the cluster: `GET /cluster` on the admin endpoint lists every node and its
//! members, the delivery-lag histogram of `/metrics` (read by the Python `prometheus_client`
//! parser) counts the lines that crossed, and with the broker gone `/healthz` says
//! `cluster=degraded` (still 200), `tcpool_cluster_up` is 0 and a line typed then counts as
//! dropped broker-down everywhere: `/metrics`, `/cluster`, `/stats`.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;

use serde_json::Value;

use crate::admin::{parse_with_prometheus_client, request};
use crate::cluster::{Nats, count, line_where, node, received};
use crate::support::*;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, b"")
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    parse_with_prometheus_client(&text)
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
}

/// What the node's console prints for `/stats` now: its cluster line.
fn stats_cluster_line(node: &mut Binary, until: &str) -> String {
    let mut found = None;
    wait_until("the /stats cluster line", || {
        let before = node.stdout_lines().len();
        node.type_line("/stats");
        found = wait_for_line(node, before, |l| l.starts_with("cluster: "));
        found.as_deref().is_some_and(|l| l.contains(until))
    });
    found.unwrap()
}

/// The first stdout line after `before` that satisfies `pred`, within a second.
fn wait_for_line(node: &Binary, before: usize, pred: impl Fn(&str) -> bool) -> Option<String> {
    for _ in 0..20 {
        if let Some(l) = node.stdout_lines().iter().skip(before).find(|l| pred(l)) {
            return Some(l.clone());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// The members of one node of a `GET /cluster` answer, as (id, nick).
fn members(node: &Value) -> Vec<(u64, Option<String>)> {
    node["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {node}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["nick"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn get_cluster_lists_both_nodes_and_the_lag_histogram_counts_what_crossed() {
    const LINES: usize = 20;
    let nats = Nats::start();
    let mut a = node(&nats, "a", &["--admin", "127.0.0.1:0"]);
    let b = node(&nats, "b", &["--admin", "127.0.0.1:0"]);
    let (admin_a, admin_b) = (a.admin_addr(), b.admin_addr());

    let mut b1 = chatter(b.addr);
    received(&mut a, 1);
    let mut a1 = chatter(a.addr);
    line_where(&mut b1, 5, |l| l == "* #1@a joined\n");
    a1.write_all(b"/nick ann\n").unwrap();
    line_where(&mut b1, 5, |l| l == "* #1@a is now ann\n");

    // Both nodes, each with its member, seen from either side.
    let mut seen = Value::Null;
    wait_until("a's view of b's member", || {
        seen = get_json(admin_a, "/cluster");
        seen["nodes"][0]["member_count"] == 1
    });
    assert_eq!(seen["cluster"], "tcpool", "{seen}");
    assert_eq!(seen["node"]["name"], "a", "{seen}");
    assert_eq!(seen["node"]["link"], "up", "{seen}");
    assert!(seen["node"]["epoch"].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(members(&seen["node"]), [(1, Some("ann".to_owned()))]);
    let nodes = seen["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{seen}");
    assert_eq!(nodes[0]["name"], "b", "{seen}");
    assert_eq!(members(&nodes[0]), [(1, None)]);
    assert_eq!(seen["truncated"], false, "{seen}");
    wait_until("b's view of a's member", || {
        let from_b = get_json(admin_b, "/cluster");
        from_b["nodes"][0]["name"] == "a"
            && members(&from_b["nodes"][0]) == [(1, Some("ann".to_owned()))]
    });

    // The cap on listed members; bad input is a 400, another method a 405.
    let capped = get_json(admin_a, "/cluster?members=1");
    assert_eq!(members(&capped["node"]).len(), 1, "{capped}");
    assert!(members(&capped["nodes"][0]).is_empty(), "{capped}");
    assert_eq!(capped["nodes"][0]["member_count"], 1, "{capped}");
    assert_eq!(capped["truncated"], true, "{capped}");
    assert_eq!(get(admin_a, "/cluster?members=x").0, 400);
    assert_eq!(get(admin_a, "/cluster?members=99999").0, 400);
    assert_eq!(request(admin_a, "POST", "/cluster", b"").0, 405);
    assert_eq!(
        get(admin_a, "/healthz"),
        (200, "ok cluster=up\n".to_owned())
    );

    // Lines from b cross to a: a's lag histogram counts each of them.
    let before = scrape(admin_a);
    let count_before = value(&before, "tcpool_cluster_delivery_lag_seconds_count{}");
    for i in 0..LINES {
        b1.write_all(format!("line {i}\n").as_bytes()).unwrap();
        line_where(&mut a1, 5, |l| l == format!("<#1@b> line {i}\n"));
    }
    let mut after = HashMap::new();
    wait_until("the lines' lags recorded", || {
        after = scrape(admin_a);
        value(&after, "tcpool_cluster_delivery_lag_seconds_count{}") >= count_before + LINES as f64
    });
    let n = value(&after, "tcpool_cluster_delivery_lag_seconds_count{}");
    let sum = value(&after, "tcpool_cluster_delivery_lag_seconds_sum{}");
    // Both nodes read the same clock: every lag is above zero and well under a second.
    assert!(sum > 0.0 && sum / n < 1.0, "sum {sum} for {n}");
    assert_eq!(
        value(
            &after,
            "tcpool_cluster_delivery_lag_seconds_bucket{le=\"+Inf\"}"
        ),
        n
    );
    assert!(
        value(
            &after,
            "tcpool_cluster_delivery_lag_seconds_bucket{le=\"5\"}"
        ) == n
    );
    assert_eq!(
        value(&after, "tcpool_cluster_delivery_lag_clamped_total{}"),
        0.0
    );
    assert_eq!(value(&after, "tcpool_cluster_up{}"), 1.0);
    assert_eq!(
        value(
            &after,
            "tcpool_cluster_dropped_total{reason=\"slow-consumer\"}"
        ),
        0.0
    );
    let lag = &get_json(admin_a, "/cluster")["node"]["lag"];
    let (p50, p99) = (
        lag["p50_seconds"].as_f64().unwrap(),
        lag["p99_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 < 1.0, "{lag}");
    assert!(lag["count"].as_u64().unwrap() >= LINES as u64, "{lag}");

    let stats = get_json(admin_a, "/stats");
    assert_eq!(stats["cluster"]["link"], "up", "{stats}");
    assert!(
        stats["cluster"]["received"].as_u64().unwrap() >= LINES as u64,
        "{stats}"
    );
    let line = stats_cluster_line(&mut a, "link up");
    assert!(line.contains("lag p50 "), "{line}");
}

#[test]
fn with_the_broker_gone_healthz_says_degraded_and_a_line_counts_as_broker_down() {
    let nats = Nats::start();
    let mut a = node(&nats, "a", &["--admin", "127.0.0.1:0"]);
    let admin = a.admin_addr();
    let mut a1 = chatter(a.addr);
    let mut a2 = chatter(a.addr);
    line_where(&mut a1, 5, |l| l == "* #2 joined\n");
    wait_until("the joins published", || {
        count(&crate::cluster::cluster_report(&mut a), "published") == 2
    });

    nats.kill();
    a.wait_stderr("the link down", |l| l.contains("cluster link down"));
    assert_eq!(
        get(admin, "/healthz"),
        (200, "ok cluster=degraded\n".to_owned())
    );
    a1.write_all(b"nobody elsewhere hears this\n").unwrap();
    // Local chat goes on.
    line_where(&mut a2, 5, |l| l == "<#1> nobody elsewhere hears this\n");
    let mut samples = HashMap::new();
    wait_until("the line counted as broker-down", || {
        samples = scrape(admin);
        value(
            &samples,
            "tcpool_cluster_dropped_total{reason=\"broker-down\"}",
        ) == 1.0
    });
    assert_eq!(value(&samples, "tcpool_cluster_up{}"), 0.0);
    assert_eq!(
        value(
            &samples,
            "tcpool_cluster_dropped_total{reason=\"queue-full\"}"
        ),
        0.0
    );
    assert_eq!(value(&samples, "tcpool_cluster_published_total{}"), 2.0);

    let view = get_json(admin, "/cluster");
    assert_eq!(view["node"]["link"], "down", "{view}");
    assert_eq!(view["node"]["dropped"]["broker-down"], 1, "{view}");
    assert_eq!(view["node"]["published"], 2, "{view}");
    let stats = get_json(admin, "/stats");
    assert_eq!(stats["cluster"]["link"], "down", "{stats}");
    let line = stats_cluster_line(&mut a, "link down");
    assert!(line.contains("broker-down 1"), "{line}");
}

#[test]
fn a_server_not_in_a_cluster_answers_404_and_an_unchanged_healthz() {
    let server = Binary::serve(&["--mode", "chat", "--admin", "127.0.0.1:0"]);
    let admin = server.admin_addr();
    let (status, body) = get(admin, "/cluster");
    assert_eq!(status, 404, "{body}");
    assert!(body.starts_with("not in a cluster"), "{body}");
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_owned()));
    let stats = get_json(admin, "/stats");
    assert!(stats.get("cluster").is_none(), "{stats}");
}
