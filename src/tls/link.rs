//! [`Link`]: a non-blocking socket, with or without a rustls connection in front, that
//! reads and writes plaintext either way.
//!
//! rustls is sans-IO: it holds the TLS state, and the owner of the socket moves the bytes.
//! A `Link` does that for an event loop. Reading feeds what the socket has to rustls until
//! plaintext comes out or the socket has nothing more (`WouldBlock`), writing out whatever
//! rustls wants to send on the way (handshake messages, alerts); writing hands plaintext to
//! rustls and writes out what it made of it. What the socket does not take stays in rustls,
//! up to [`BUFFER_LIMIT`]: past that a write takes nothing and says `WouldBlock`, as a full
//! socket does, so the owner's back-pressure works the same with and without TLS. The owner
//! calls [`Link::flush`] when the socket has room again.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::Connection;

/// How much plaintext, and then ciphertext, one connection's rustls holds before a write
/// says `WouldBlock`: as much as a socket's send buffer takes at its smallest.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// A socket, with TLS or without.
#[derive(Debug)]
pub struct Link {
    socket: TcpStream,
    tls: Option<Box<Connection>>,
    /// The socket said end of input; what rustls still holds may be read.
    eof: bool,
    /// The input ended without TLS's `close_notify`.
    cut: bool,
}

impl Link {
    /// A link without TLS: reads and writes go straight to the socket.
    pub fn plain(socket: TcpStream) -> Self {
        Link {
            socket,
            tls: None,
            eof: false,
            cut: false,
        }
    }

    /// A link speaking TLS over `socket` as `conn` (a server or a client connection).
    pub fn tls(socket: TcpStream, conn: impl Into<Connection>) -> Self {
        let mut conn = Box::new(conn.into());
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Link {
            socket,
            tls: Some(conn),
            eof: false,
            cut: false,
        }
    }

    /// Speaks TLS as `conn` instead, before anything was read or written (a `tls-cert`
    /// fault's configuration).
    pub fn replace_tls(&mut self, conn: impl Into<Connection>) {
        let mut conn = Box::new(conn.into());
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        self.tls = Some(conn);
    }

    /// Whether the input ended without TLS's `close_notify`: a peer that just closed, or a
    /// stream cut short by someone in the way. (Reads say end of input either way.)
    pub fn closed_without_notify(&self) -> bool {
        self.cut
    }

    /// `tls-abort,at=mid-handshake`: feeds rustls the client's hello, and once it has made
    /// its answer, sends only the first half of it. `Ok(Some(n))`: `n` bytes went out and the
    /// connection is to be closed; `Ok(None)`: the hello is not all here yet.
    ///
    /// # Errors
    ///
    /// What reading the socket or the hello failed with.
    pub fn send_half_a_handshake(&mut self) -> io::Result<Option<usize>> {
        let Link { socket, tls, .. } = self;
        let Some(conn) = tls.as_mut() else {
            return Ok(None);
        };
        loop {
            match conn.read_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
        }
        if !conn.wants_write() {
            return Ok(None);
        }
        let mut answer = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut answer)?;
        }
        let half = answer.len() / 2;
        socket.write_all(&answer[..half])?;
        Ok(Some(half))
    }

    /// The socket itself, for socket options and the poller.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// The socket itself, to register it with a poller.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// The TLS connection, if this link speaks TLS.
    pub fn conn(&self) -> Option<&Connection> {
        self.tls.as_deref()
    }

    /// Whether this link speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a read that returned less than asked may still be followed by more without a
    /// new readiness event: with TLS, rustls may hold plaintext, or the socket ciphertext,
    /// that one read did not bring out.
    pub fn short_read_drains(&self) -> bool {
        self.tls.is_none()
    }

    /// Whether rustls holds bytes for the socket that it has not taken yet.
    pub fn has_unsent(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes what rustls holds for the socket until the socket is full. Returns `Ok(true)`
    /// when nothing is left (always, without TLS).
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(true);
        };
        while conn.wants_write() {
            match conn.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Ends this side's output: TLS's `close_notify` first, then the socket's write side.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
            // Best effort: 24 bytes, written after everything else was.
            let _ = self.flush();
        }
        self.socket.shutdown(std::net::Shutdown::Write)
    }

    /// Moves the handshake on with what the socket has: `Ok(true)` once it is done (and at
    /// once without TLS), `Ok(false)` while it waits for the peer. Plaintext that came with
    /// its end stays in rustls for the next read.
    ///
    /// # Errors
    ///
    /// The handshake failed (`InvalidData`, after the alert went to the peer), or the peer
    /// closed during it (`UnexpectedEof`).
    pub fn handshake(&mut self) -> io::Result<bool> {
        let Link {
            socket, tls, eof, ..
        } = self;
        let Some(conn) = tls.as_mut() else {
            return Ok(true);
        };
        while conn.is_handshaking() {
            if *eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            if !feed(conn, socket, eof)? {
                return Ok(false);
            }
        }
        flush_quietly(conn, socket)?;
        Ok(true)
    }

    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Link {
            socket,
            tls,
            eof,
            cut,
        } = self;
        let conn = tls.as_mut().expect("a TLS link");
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without `close_notify`: an end of input all
                // the same, as most clients end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    *cut = true;
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
            if *eof {
                return Ok(0);
            }
            if !feed(conn, socket, eof)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    fn write_tls(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.tls.as_mut().expect("a TLS link").writer().write(buf)?;
        let sent_all = self.flush()?;
        if n == 0 && sent_all {
            // rustls was full, and the socket took all of it: room again.
            n = self.tls.as_mut().expect("a TLS link").writer().write(buf)?;
            self.flush()?;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

/// Gives rustls one read of the socket's bytes and lets it process them, sending whatever
/// it answers (handshake messages, an alert). `Ok(false)` when the socket had nothing;
/// at the socket's end of input, sets `eof`.
fn feed(conn: &mut Connection, socket: &mut TcpStream, eof: &mut bool) -> io::Result<bool> {
    match conn.read_tls(socket) {
        Ok(0) => *eof = true,
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // What the last bytes made rustls answer goes out now.
            flush_quietly(conn, socket)?;
            return Ok(false);
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
        Err(e) => return Err(e),
    }
    if let Err(e) = conn.process_new_packets() {
        // rustls queued an alert telling the peer why: send it, then fail.
        let _ = flush_quietly(conn, socket);
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    flush_quietly(conn, socket)?;
    Ok(true)
}

/// Writes what `conn` holds for `socket` until done or full; a full socket is no error.
fn flush_quietly(conn: &mut Connection, socket: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Link {
    /// Plaintext in: `Ok(0)` at the end of input, `WouldBlock` when the socket has nothing
    /// more for now. A TLS error (a bad record, a failed handshake) is `InvalidData`, after
    /// the alert rustls made for it went to the peer.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            self.read_tls(buf)
        } else {
            self.socket.read(buf)
        }
    }
}

impl Write for Link {
    /// Plaintext out: how much of `buf` was taken (with TLS: by rustls, which sends what the
    /// socket takes and holds the rest), or `WouldBlock` when nothing could be.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            self.write_tls(buf)
        } else {
            self.socket.write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Link::flush(self).map(|_| ())
    }
}
