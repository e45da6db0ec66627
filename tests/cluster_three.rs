//! Three nodes of one cluster with two clients on each, all talking at once: every line
//! reaches every other member exactly once, in order per sender, and never its sender.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::cluster::Nats;
use crate::support::*;

const NODES: usize = 3;
const PER_NODE: usize = 2;
const LINES: usize = 40;

#[test]
fn every_line_reaches_every_other_member_once_in_order_never_its_sender() {
    let nats = Nats::start();
    let url = nats.url();
    let nodes: Vec<Binary> = (0..NODES)
        .map(|n| {
            let name = format!("n{n}");
            let node = Binary::serve(&["--mode", "chat", "--cluster", &url, "--node", &name]);
            node.wait_stderr("the link up", |l| l.contains("cluster link up"));
            node
        })
        .collect();

    // Everyone joins, then every client names itself, so each line says who sent it; each
    // waits until all the names have reached it before anyone talks.
    let total = NODES * PER_NODE;
    let mut clients: Vec<(String, TcpStream)> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..PER_NODE {
            clients.push((format!("c{n}{c}"), chatter(node.addr)));
        }
    }
    for (name, stream) in &mut clients {
        stream
            .write_all(format!("/nick {name}\n").as_bytes())
            .unwrap();
    }
    let mut readers: Vec<(String, BufReader<TcpStream>)> = clients
        .iter()
        .map(|(name, s)| {
            let s = s.try_clone().unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            (name.clone(), BufReader::new(s))
        })
        .collect();
    for (name, reader) in &mut readers {
        let mut named = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut line = String::new();
        // Its own rename, and every other client's.
        while named < total {
            assert!(Instant::now() < deadline, "{name}: {named} renames seen");
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "{name}: closed");
            if line.contains(" is now c") || line.starts_with("* you are now ") {
                named += 1;
            }
        }
    }

    // All talk at once, each line numbered by its sender (a few KiB in all: nobody's
    // buffers fill before the reading below).
    let writers: Vec<std::thread::JoinHandle<TcpStream>> = clients
        .into_iter()
        .map(|(name, mut stream)| {
            std::thread::spawn(move || {
                for k in 0..LINES {
                    stream
                        .write_all(format!("{name} line {k}\n").as_bytes())
                        .unwrap();
                }
                stream
            })
        })
        .collect();
    let _open: Vec<TcpStream> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    for (name, reader) in &mut readers {
        let mut next: HashMap<String, usize> = HashMap::new();
        let want = (total - 1) * LINES;
        let mut got = 0;
        let mut line = String::new();
        while got < want {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "{name}: closed after {got} of {want} lines"
            );
            let Some(rest) = line.strip_prefix('<') else {
                continue; // a notice
            };
            let (sender, text) = rest.split_once("> ").expect("a chat line");
            assert_ne!(sender, name, "{name} got its own line back: {line:?}");
            let k: usize = text
                .trim_end()
                .rsplit(' ')
                .next()
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("{name}: {line:?}"));
            let expected = next.entry(sender.to_owned()).or_default();
            assert_eq!(
                k, *expected,
                "{name}: from {sender}, line {k} where {expected} was next"
            );
            *expected += 1;
            got += 1;
        }
        assert_eq!(next.len(), total - 1, "{name}: {next:?}");
        assert!(next.values().all(|&n| n == LINES), "{name}: {next:?}");
    }
}
