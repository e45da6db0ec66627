//! A minimal tokio echo server: the yardstick `benches/compare.sh` measures tcpool against.
//! Every read's bytes go straight back, one task per connection.
//!
//! ```text
//! cargo run --release --example tokio_echo -- 9000   # listens on 127.0.0.1:9000
//! cargo run --release --example tokio_echo           # or on a free port (printed)
//! nc 127.0.0.1 9000                                   # type lines; they come back
//! tcpool bench 127.0.0.1:9000 -c 64 -d 5              # or load it
//! ```
//!
//! It prints `listening on ADDR` once bound. `TOKIO_WORKER_THREADS` sets its thread count
//! (one per CPU by default). Ctrl-C stops it.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad port {arg:?}: {e}"),
            )
        })?,
        None => 0,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            // Out of descriptors, or a connection reset before it was accepted: go on.
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
