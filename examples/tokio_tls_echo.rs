//! A minimal tokio + tokio-rustls echo server, with the same rustls and crypto provider
//! (aws-lc-rs) as tcpool: the yardstick `benches/tls.sh` measures tcpool's TLS against.
//! Every read's plaintext goes straight back, one task per connection.
//!
//! ```text
//! tcpool tls gen certs
//! cargo run --release --example tokio_tls_echo -- certs/server.pem certs/server-key.pem 9443
//! tcpool bench --tls --tls-ca certs/ca.pem localhost:9443 -c 16 -d 5
//! ```
//!
//! It prints `listening on ADDR` once bound (port 0 or none: a free one).
//! `TOKIO_WORKER_THREADS` sets its thread count (one per CPU by default). Ctrl-C stops it.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: tokio_tls_echo CERT.pem KEY.pem [PORT]");
    };
    let port: u16 = args.next().map_or(Ok(0), |p| p.parse())?;
    // The same configuration tcpool serves: its provider, versions and tickets.
    let made = tcpool::tls::server_config(&tcpool::tls::ServerCerts::Files {
        chain: cert.into(),
        key: key.into(),
    })?;
    let acceptor = TlsAcceptor::from(Arc::clone(&made.config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(acceptor.clone(), stream));
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(acceptor: TlsAcceptor, stream: TcpStream) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut stream = acceptor.accept(stream).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await? {
            0 => return stream.shutdown().await,
            n => n,
        };
        stream.write_all(&buf[..n]).await?;
    }
}
