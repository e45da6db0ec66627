//! A second, independent echo load client on tokio: one task per connection, each writing a
//! 64-byte line and reading its echo in a closed loop. It shares no code with `tcpool bench`,
//! so running both against the same server shows whether the generator is the bottleneck.
//!
//! ```text
//! cargo run --release --example tokio_client -- 127.0.0.1:8900 64 5   # ADDR CONNECTIONS SECS
//! ```
//!
//! Prints one line: connections, seconds, messages and messages per second. Every echo is
//! compared with what was sent; a mismatch or a closed connection ends the run with an error.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MESSAGE: &[u8; 64] = b"0123456789abcdefghijklmnoprstuvwxyzABCDEFGHIJKLMNOPRSTUVWXYZ-__\n";

#[tokio::main]
async fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8900".into());
    let connections: usize = args.next().map_or(Ok(64), |a| a.parse()).map_err(invalid)?;
    let secs: f64 = args
        .next()
        .map_or(Ok(5.0), |a| a.parse())
        .map_err(invalid)?;

    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(&addr).await?;
        stream.set_nodelay(true)?;
        let (done, count) = (Arc::clone(&done), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            round_trips(stream, &done, &count).await
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    done.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let messages = count.load(Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(io::Error::other)??;
    }
    println!(
        "connections {connections}  seconds {elapsed:.2}  messages {messages}  msgs/s {:.0}",
        messages as f64 / elapsed
    );
    Ok(())
}

async fn round_trips(
    mut stream: TcpStream,
    done: &AtomicBool,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut reply = [0u8; MESSAGE.len()];
    while !done.load(Ordering::Relaxed) {
        stream.write_all(MESSAGE).await?;
        stream.read_exact(&mut reply).await?;
        if &reply != MESSAGE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "echo mismatch"));
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}
