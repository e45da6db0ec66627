//! The framing path alone, no sockets: how fast a [`Splitter`] cuts one read into messages,
//! and how fast peer text is escaped for the console. Three reads, each fed to the echo
//! splitter (passing) and to the chat/manual one (holding):
//!
//! - one 64-byte line, the load generator's default message;
//! - 16 KiB without a newline (one long line passing through, or held and cut at `max_line`);
//! - 16 KiB of 64-byte lines (256 messages in one read).
//!
//! ```text
//! cargo bench --bench framing
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tcpool::server::protocol::{Splitter, escape};

/// The default `--max-line`.
const MAX_LINE: usize = 64 * 1024;

fn line_64() -> Vec<u8> {
    let mut line = vec![b'x'; 63];
    line.push(b'\n');
    line
}

fn reads() -> [(&'static str, Vec<u8>); 3] {
    [
        ("64B line", line_64()),
        ("16KiB no newline", vec![b'y'; 16 * 1024]),
        ("16KiB of 64B lines", line_64().repeat(256)),
    ]
}

/// A splitter that has already seen a `\n`, so every read is line-based.
fn line_based(hold: bool) -> Splitter {
    let mut splitter = if hold {
        Splitter::holding(MAX_LINE)
    } else {
        Splitter::passing()
    };
    splitter.feed(b"\n", &mut |_| {});
    splitter
}

fn splitting(c: &mut Criterion) {
    let mut group = c.benchmark_group("feed");
    for (name, read) in reads() {
        group.throughput(Throughput::Bytes(read.len() as u64));
        for (kind, hold) in [("passing", false), ("holding", true)] {
            let mut splitter = line_based(hold);
            group.bench_function(format!("{kind}/{name}"), |b| {
                b.iter(|| {
                    let mut bytes = 0;
                    splitter.feed(black_box(&read), &mut |m| bytes += m.raw.len());
                    black_box(bytes)
                })
            });
        }
    }
    group.finish();
}

fn escaping(c: &mut Criterion) {
    let mut group = c.benchmark_group("escape");
    let ascii = line_64().repeat(16);
    let mixed = "peer 你好 text\twith a tab\r\n".repeat(32).into_bytes();
    for (name, text) in [("1KiB ascii", ascii), ("mixed", mixed)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| escape(black_box(&text))));
    }
    group.finish();
}

criterion_group!(benches, splitting, escaping);
criterion_main!(benches);
