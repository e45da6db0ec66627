//! The chat relay's fan-out: one message queued for every session of a registry, on the
//! calling thread versus spread over rayon's threads, for 1,000 to 16,000 recipients. It is
//! why `Fanout::Sequential` is the default (src/server/registry.rs).
//!
//! ```text
//! cargo bench --bench broadcast
//! ```
//!
//! Each measured broadcast goes to a fresh registry (built outside the timing), so outboxes
//! never fill up across iterations.

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tcpool::server::{Fanout, Registry};

fn registry(sessions: usize) -> Registry {
    let registry = Registry::new(1 << 20);
    for i in 0..sessions {
        registry.register(SocketAddr::from((
            [127, 0, 0, 1],
            (i % 60_000) as u16 + 1024,
        )));
    }
    registry
}

fn fanout(c: &mut Criterion) {
    let line: Arc<[u8]> = Arc::from(&b"<#1> a chat line of ordinary length\n"[..]);
    let mut group = c.benchmark_group("broadcast");
    for sessions in [1_000, 4_000, 16_000] {
        group.throughput(Throughput::Elements(sessions as u64));
        for (name, mode) in [
            ("sequential", Fanout::Sequential),
            ("rayon", Fanout::Parallel),
        ] {
            group.bench_with_input(BenchmarkId::new(name, sessions), &sessions, |b, &n| {
                // By reference: dropping the registry stays outside the timing.
                b.iter_batched_ref(
                    || registry(n),
                    |registry| registry.broadcast_with(mode, |_| Some(Arc::clone(&line))),
                    BatchSize::LargeInput,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
