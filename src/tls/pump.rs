//! A TLS client connection for code written for a plain socket (`tcpool talk`): the
//! handshake is done first, blocking, so that a failure is reported before anything else;
//! then a thread moves plaintext between a [`Link`] and one end of a Unix socket pair, and
//! the caller reads and writes the other end as it would a TCP socket.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::Link;

/// Does the TLS handshake on `stream` (blocking, up to `timeout`), as `name`.
///
/// # Errors
///
/// The handshake failed: the certificate did not verify (a rustls error inside the I/O
/// error: see [`super::error_text`]), the server closed, or `timeout` passed.
pub fn handshake(
    stream: &mut TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> io::Result<ClientConnection> {
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let deadline = Instant::now() + timeout;
    stream.set_read_timeout(Some(timeout))?;
    while conn.is_handshaking() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no TLS handshake within the connect timeout",
            ));
        }
        match conn.complete_io(stream) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no TLS handshake within the connect timeout",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    stream.set_read_timeout(None)?;
    Ok(conn)
}

const SOCKET: Token = Token(0);
const USER: Token = Token(1);

/// The thread [`pump`] started.
#[derive(Debug)]
pub struct Pump {
    done: crossbeam::channel::Receiver<Option<String>>,
    cut: Arc<AtomicBool>,
}

impl Pump {
    /// Waits up to `timeout` for the thread to carry what is still on its way and end (the
    /// caller's last line, `close_notify`): before the process exits, or they are lost.
    /// Returns why the TLS session failed, if it did (an alert from the server, say: with
    /// TLS 1.3 a server that refuses the client's certificate says so after the handshake).
    pub fn finish(&self, timeout: Duration) -> Option<String> {
        self.done.recv_timeout(timeout).ok().flatten()
    }

    /// Whether the server's end of input came without TLS's `close_notify`: what it sent may
    /// have been cut short (after [`Pump::finish`]).
    pub fn closed_without_notify(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }
}

/// Starts the thread that carries plaintext between `conn` on `stream` and the returned
/// end of a Unix socket pair. Closing the write side of that end sends `close_notify` and
/// closes the TCP write side; the server's end of input shows as the end of input there.
///
/// # Errors
///
/// When the socket pair, the poller or the thread cannot be made.
pub fn pump(stream: TcpStream, conn: ClientConnection) -> io::Result<(UnixStream, Pump)> {
    let (theirs, ours) = UnixStream::pair()?;
    stream.set_nonblocking(true)?;
    ours.set_nonblocking(true)?;
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
    let mut link = Link::tls(mio::net::TcpStream::from_std(stream), conn);
    let mut user = mio::net::UnixStream::from_std(ours);
    let poll = Poll::new()?;
    poll.registry().register(
        link.socket_mut(),
        SOCKET,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    poll.registry()
        .register(&mut user, USER, Interest::READABLE | Interest::WRITABLE)?;
    let (done_tx, done) = crossbeam::channel::bounded(1);
    let cut = Arc::new(AtomicBool::new(false));
    let seen_cut = Arc::clone(&cut);
    thread::Builder::new()
        .name("tcpool-tls".into())
        .spawn(move || {
            let carried = carry(poll, &mut link, &mut user);
            seen_cut.store(link.closed_without_notify(), Ordering::Relaxed);
            let failed = carried.err().map(|e| {
                let why = super::error_text(&e);
                log::debug!("TLS link to {peer:?} ended: {why}");
                why
            });
            // Both ends close here: the user's side sees the end of input.
            let _ = user.shutdown(std::net::Shutdown::Both);
            let _ = done_tx.send(failed);
        })?;
    Ok((theirs, Pump { done, cut }))
}

/// Moves plaintext both ways until both directions have ended.
fn carry(mut poll: Poll, link: &mut Link, user: &mut mio::net::UnixStream) -> io::Result<()> {
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 16 * 1024];
    // Read from one side, not yet taken by the other.
    let mut to_user: Vec<u8> = Vec::new();
    let mut to_server: Vec<u8> = Vec::new();
    let (mut server_done, mut user_done) = (false, false);
    loop {
        let mut moved = true;
        while moved {
            moved = false;
            // Server to user.
            if !server_done && to_user.is_empty() {
                match link.read(&mut buf) {
                    Ok(0) => {
                        server_done = true;
                        let _ = user.shutdown(std::net::Shutdown::Write);
                    }
                    Ok(n) => {
                        to_user.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if !to_user.is_empty() {
                match user.write(&to_user) {
                    Ok(n) => {
                        to_user.drain(..n);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The user's side went away: nothing more to carry.
                    Err(_) => return Ok(()),
                }
            }
            // User to server.
            if !user_done && to_server.is_empty() {
                match user.read(&mut buf) {
                    Ok(0) => {
                        user_done = true;
                        // A server that has already closed its side may have closed the
                        // connection whole: its end is no failure of ours.
                        if let Err(e) = link.shutdown_write()
                            && !server_done
                        {
                            return Err(e);
                        }
                    }
                    Ok(n) => {
                        to_server.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Ok(()),
                }
            }
            if !to_server.is_empty() {
                match link.write(&to_server) {
                    Ok(n) => {
                        to_server.drain(..n);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The server closed its side and then the connection: what the user
                    // still had to say has nowhere to go, as without TLS.
                    Err(_) if server_done => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if let Err(e) = link.flush()
                && !server_done
            {
                return Err(e);
            }
        }
        if server_done && user_done {
            return Ok(());
        }
        poll.poll(&mut events, None)?;
    }
}
