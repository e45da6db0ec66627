//! `--balance auto` with two workers in use keeps each client thread's sessions on one
//! worker: the sessions whose packets arrive on one CPU are swapped onto one worker, and they
//! stay there when the client threads trade CPUs.
//!
//! Two client threads, each pinned to a CPU of its own and each echoing 16 KiB blocks on its
//! connections as fast as they come back, load two workers (as two generator threads on the
//! same machine do); the test waits (bounded) until each thread's sessions share a worker and
//! the two threads' are on different workers, reading which worker holds which session from
//! the workers' pollers (`/proc/self/fdinfo`: the server runs in this process), and checks
//! every byte that came back.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use tcpool::Config;
use tcpool::server::Balancing;

use crate::admin::Served;
use crate::balance::{PATIENCE, connect};
use crate::balance_hostile::moved_in;

/// The server-side sockets' peer ports, per poller, of every epoll descriptor in this
/// process that watches more than one socket.
fn peer_ports_by_poller() -> Vec<HashSet<u16>> {
    // inode -> (local port, remote port), from the kernel's table of TCP sockets.
    let mut ports = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
            ports.insert(f[9].to_owned(), (port(f[1]), port(f[2])));
        }
    }
    let mut pollers = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let path = entry.path();
        let is_poller = std::fs::read_link(&path)
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]");
        if !is_poller {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        let mut peers: HashSet<u16> = info
            .lines()
            .filter_map(|l| l.trim().strip_prefix("tfd:"))
            .filter_map(|rest| rest.split_whitespace().next())
            .filter_map(|target| std::fs::read_link(format!("/proc/self/fd/{target}")).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().into_owned();
                let inode = l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned();
                ports.get(&inode).map(|&(_, remote)| remote)
            })
            .collect();
        // The listeners' pollers hold sockets with no peer.
        peers.remove(&0);
        if !peers.is_empty() {
            pollers.push(peers);
        }
    }
    pollers
}

/// A client thread pinned to `cpu` that, round after round until `stop`, writes a numbered
/// 16 KiB block on each of its connections and reads each back whole, checking every byte.
/// Returns the rounds it made.
///
/// It moves to CPU `(cpu + hops) % 2` as `hops` counts up.
fn hopping_client(
    cpu: usize,
    hops: Arc<AtomicUsize>,
    mut streams: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        pin(cpu);
        let mut hopped = 0;
        let blocks: Vec<Vec<u8>> = (0..streams.len())
            .map(|c| {
                (0..)
                    .flat_map(|n| format!("cpu {cpu} connection {c} line {n:06}\n").into_bytes())
                    .take(16 * 1024)
                    .collect()
            })
            .collect();
        let mut buf = vec![0; 16 * 1024];
        let mut rounds = 0u64;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < 2 * PATIENCE {
            let now = hops.load(Ordering::Relaxed);
            if now != hopped {
                hopped = now;
                pin((cpu + hopped) % 2);
            }
            for (stream, block) in streams.iter_mut().zip(&blocks) {
                stream.write_all(block).unwrap();
            }
            for (c, (stream, block)) in streams.iter_mut().zip(&blocks).enumerate() {
                stream.read_exact(&mut buf).unwrap();
                assert!(
                    buf == *block,
                    "client {cpu} connection {c}: the echo differs"
                );
            }
            rounds += 1;
        }
        rounds
    })
}

pub fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &set).unwrap();
}

/// Waits (bounded by [`PATIENCE`]) until two workers are in use, each holding one of the
/// groups of sessions (by their peers' ports) whole; tells whether they did.
fn wait_grouped(groups: &[Vec<u16>; 2]) -> bool {
    let started = Instant::now();
    loop {
        // This server's pollers: those watching any of its sessions (other tests in this
        // process run servers of their own).
        let pollers: Vec<HashSet<u16>> = peer_ports_by_poller()
            .into_iter()
            .filter(|peers| groups.iter().flatten().any(|p| peers.contains(p)))
            .collect();
        let home = |group: &[u16]| {
            pollers
                .iter()
                .position(|peers| group.iter().all(|p| peers.contains(p)))
        };
        // Two workers in use, each holding one group whole.
        if let (Some(a), Some(b)) = (home(&groups[0]), home(&groups[1]))
            && a != b
            && pollers.len() == 2
        {
            return true;
        }
        if started.elapsed() > PATIENCE {
            eprintln!("pollers: {pollers:?}, groups: {groups:?}");
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Connections in all, half of them in each group.
const CLIENTS: usize = 16;

/// A server on two workers with `--balance auto`, both in use from the start, if this
/// machine has two CPUs for two client threads of their own.
fn two_workers() -> Option<Served> {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    (cpus >= 2).then(|| {
        Served::start(Config {
            workers: 2,
            balance: Balancing::Auto,
            workers_at_start: 2,
            ..Config::default()
        })
    })
}

#[test]
fn sessions_whose_packets_arrive_on_one_cpu_end_up_on_one_worker_and_stay() {
    let Some(served) = two_workers() else {
        eprintln!("skipped: one CPU, no two client threads on CPUs of their own");
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Placed in turn, group 0, 0, 1, 1, 0, 0, ...: each group starts split over both workers.
    let mut groups: [Vec<u16>; 2] = [Vec::new(), Vec::new()];
    let mut streams: [Vec<TcpStream>; 2] = [Vec::new(), Vec::new()];
    for i in 0..CLIENTS {
        let group = (i / 2) % 2;
        let stream = connect(served.addr);
        groups[group].push(stream.local_addr().unwrap().port());
        streams[group].push(stream);
    }
    let [zero, one] = streams;
    let hops = Arc::new(AtomicUsize::new(0));
    let clients = [
        hopping_client(0, hops.clone(), zero, stop.clone()),
        hopping_client(1, hops.clone(), one, stop.clone()),
    ];
    let grouped = wait_grouped(&groups);
    let moved = moved_in(&served.scrape());
    // Then the two client threads trade CPUs, again and again: each worker's sessions still
    // all come from one CPU, as grouped as before, and nothing needs to move. (The grouping
    // used to swap them all at each trade, chasing threads that the kernel moves, as it does
    // a lone generator thread, from CPU to CPU.) Each trade lasts long enough for the
    // grouping's looks, every 250 ms, to call the sessions steady.
    let trades = 4;
    if grouped {
        for _ in 0..trades {
            hops.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(700));
        }
    }
    let moved_trading = moved_in(&served.scrape()) - moved;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        assert!(client.join().unwrap() > 0);
    }
    assert!(
        grouped,
        "each group's sessions on a worker of its own within {PATIENCE:?}"
    );
    // Getting there took moves: the sessions were placed split.
    assert!(moved >= 2.0);
    // A gathering on one worker or a spreading over two, as the load asks, moves each
    // session once at most; a swap at each trade would move them all each time.
    assert!(
        moved_trading <= CLIENTS as f64,
        "{moved_trading} moves of {CLIENTS} sessions over {trades} trades of CPUs"
    );
}

/// A connection from a client thread pinned to `cpu` that echoes a line.
fn connect_echo(cpu: usize, addr: std::net::SocketAddr, c: usize) -> TcpStream {
    let mut stream = connect(addr);
    let line = format!("cpu {cpu} connection {c}\n");
    stream.write_all(line.as_bytes()).unwrap();
    let mut back = vec![0; line.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, line.as_bytes(), "the echo differs");
    stream
}

/// A client thread pinned to `cpu` opens a first connection and closes it once the other
/// thread has opened its own (at `both`), then opens `n` and returns them, still open.
fn connect_from(
    cpu: usize,
    addr: std::net::SocketAddr,
    n: usize,
    both: Arc<Barrier>,
) -> Vec<TcpStream> {
    pin(cpu);
    let first = connect_echo(cpu, addr, n);
    both.wait();
    drop(first);
    (0..n).map(|c| connect_echo(cpu, addr, c)).collect()
}

#[test]
fn connections_start_on_the_worker_of_the_cpu_they_came_from() {
    let Some(served) = two_workers() else {
        eprintln!("skipped: one CPU, no two client threads on CPUs of their own");
        return;
    };
    // Both workers are in use from the start (`workers_at_start`; an idle server gathers on
    // one a second later at the earliest). Until connections have come from the CPUs of both workers, the
    // server cannot tell two client threads from one, and places them in turn (the looks
    // group those under load): each thread opens a first connection, not counted, and waits
    // for the other's.
    let addr = served.addr;
    let both = Arc::new(Barrier::new(2));
    let threads = [0, 1].map(|cpu| {
        let both = both.clone();
        thread::spawn(move || connect_from(cpu, addr, CLIENTS / 2, both))
    });
    let streams = threads.map(|t| t.join().unwrap());
    let groups = streams.each_ref().map(|s| {
        s.iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect::<Vec<_>>()
    });
    // One line each is no load: the grouping's looks, which wait for a loaded worker, never
    // ran. Only the placement at arrival can have grouped them. It reads the CPU a session's
    // packets last arrived on, and a socket that has received nothing but its handshake may
    // tell the CPU of another connection's handshake, one that came at the same moment: so
    // each group on a worker of its own, all of it, or all but one session.
    let mostly = |peers: &HashSet<u16>, group: &[u16]| {
        group.iter().filter(|p| peers.contains(p)).count() + 1 >= group.len()
    };
    let started = Instant::now();
    let grouped = loop {
        let pollers: Vec<HashSet<u16>> = peer_ports_by_poller()
            .into_iter()
            .filter(|peers| groups.iter().flatten().any(|p| peers.contains(p)))
            .collect();
        let home = |group: &[u16]| pollers.iter().position(|peers| mostly(peers, group));
        if let (Some(a), Some(b)) = (home(&groups[0]), home(&groups[1]))
            && a != b
        {
            break true;
        }
        if started.elapsed() > Duration::from_millis(500) {
            eprintln!("pollers: {pollers:?}, groups: {groups:?}");
            break false;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        grouped,
        "each client thread's connections on a worker of its own as they arrive"
    );
    // Each connection, the two first ones too, moved once at most, right after its arrival.
    let moved = moved_in(&served.scrape());
    let sessions = CLIENTS + 2;
    assert!(
        moved <= sessions as f64,
        "{moved} moves of {sessions} sessions"
    );
    drop(streams);
}
