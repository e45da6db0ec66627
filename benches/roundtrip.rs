//! End-to-end loopback round trips through a real tcpool echo server on `127.0.0.1:0`: one
//! client writing a 64-byte line and reading it back, then four clients doing the same at
//! once, to see what the server's workers add when they have company.
//!
//! ```text
//! cargo bench --bench roundtrip
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tcpool::server::{Config, Server, Shutdown, Summary, bind};

/// Clients in the parallel variant.
const PARALLEL: usize = 4;

/// One message: 63 printable bytes and `\n`.
const MESSAGE: &[u8; 64] = b"abcdefghijklmnoprstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789..\n";

/// An in-process echo server; shut down and joined on drop.
struct Running {
    addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<std::io::Result<Summary>>>,
}

impl Running {
    fn start() -> Self {
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("bind 127.0.0.1:0");
        let config = Config {
            workers: 2,
            ..Config::default()
        };
        let server = Server::new(listener, config);
        let addr = server.local_addr().unwrap();
        let shutdown = server.shutdown();
        let thread = Some(thread::spawn(move || server.run()));
        Running {
            addr,
            shutdown,
            thread,
        }
    }

    fn client(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn round_trip(stream: &mut TcpStream, reply: &mut [u8; 64]) {
    stream.write_all(MESSAGE).expect("write");
    stream.read_exact(reply).expect("read the echo");
    assert_eq!(reply, MESSAGE);
}

fn roundtrip(c: &mut Criterion) {
    let server = Running::start();
    let mut group = c.benchmark_group("roundtrip_64b");
    group.throughput(Throughput::Elements(1));

    let mut client = server.client();
    let mut reply = [0u8; 64];
    group.bench_function("sequential", |b| {
        b.iter(|| round_trip(&mut client, &mut reply));
    });

    let mut clients: Vec<TcpStream> = (0..PARALLEL).map(|_| server.client()).collect();
    group.bench_function(format!("parallel_{PARALLEL}_clients"), |b| {
        // Each iteration is one round trip, whichever client does it: the time is what
        // `iters` round trips take spread over the clients.
        b.iter_custom(|iters| {
            let n = PARALLEL as u64;
            let started = Instant::now();
            thread::scope(|scope| {
                for (k, client) in clients.iter_mut().enumerate() {
                    let share = iters / n + u64::from((k as u64) < iters % n);
                    scope.spawn(move || {
                        let mut reply = [0u8; 64];
                        for _ in 0..share {
                            round_trip(client, &mut reply);
                        }
                    });
                }
            });
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
