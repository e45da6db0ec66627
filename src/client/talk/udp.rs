//! `tcpool talk --udp`: each line is one datagram to the target, and every datagram that
//! comes back is printed with who sent it (`127.0.0.1:9000>> text`, control characters
//! escaped). The socket is not connected, so a reply from another address than the target
//! is shown too, under its own address.
//!
//! After each line the talk waits up to the reply timeout for a first reply, then a short
//! while ([`LINGER`]) for more (a doubled reply, a second server answering), and says when
//! none came.

use std::io::{self, BufRead};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::server::protocol::{LineEnding, escape};

/// After a reply, how long more replies to the same line are awaited (at most the reply
/// timeout).
pub const LINGER: Duration = Duration::from_millis(200);

/// A socket for talking to `target`: bound to any address of its family, not connected.
///
/// # Errors
///
/// The socket cannot be bound.
pub fn socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(local)
}

/// Sends `line` (ended by `eol`) to `target` as one datagram and prints every reply that
/// comes, with `print`; the number of replies.
///
/// # Errors
///
/// Sending fails, or the socket fails for another reason than a refusal (a refusal from
/// the target is printed with `warn` and ends the wait).
pub fn exchange(
    socket: &UdpSocket,
    target: SocketAddr,
    line: &str,
    eol: LineEnding,
    reply_timeout: Duration,
    print: &impl Fn(&str),
    warn: &impl Fn(&str),
) -> io::Result<usize> {
    socket.send_to(&eol.terminate(line.as_bytes()), target)?;
    let mut buf = vec![0u8; 65_536];
    let mut replies = 0;
    let mut until = Instant::now() + reply_timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                replies += 1;
                print(&format!("{from}>> {}", escape(&buf[..n])));
                if replies == 1 {
                    until = until.min(Instant::now() + LINGER);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                warn(&format!(
                    "{target} refused the datagram: nothing listens there"
                ));
                return Ok(replies);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if replies == 0 {
        warn(&format!(
            "no reply within {}",
            crate::units::show_duration(reply_timeout)
        ));
    }
    Ok(replies)
}

/// The scripted talk: one datagram per line of `input`, each followed by its replies; the
/// number of lines that got no reply.
///
/// # Errors
///
/// Reading the input or the socket fails.
pub fn run_piped(
    socket: &UdpSocket,
    target: SocketAddr,
    input: impl BufRead,
    eol: LineEnding,
    reply_timeout: Duration,
    print: impl Fn(&str),
    warn: impl Fn(&str),
) -> io::Result<usize> {
    let mut unanswered = 0;
    for line in input.lines() {
        let line = line?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if exchange(socket, target, line, eol, reply_timeout, &print, &warn)? == 0 {
            unanswered += 1;
        }
    }
    Ok(unanswered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn each_line_is_a_datagram_and_each_reply_names_its_sender() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = echo.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 100];
            // The first line answered twice, the second not at all.
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
            let _ = echo.recv_from(&mut buf).unwrap();
        });
        let socket = socket(at).unwrap();
        let printed = RefCell::new(Vec::new());
        let warned = RefCell::new(Vec::new());
        let unanswered = run_piped(
            &socket,
            at,
            &b"hi\tthere\r\nsilence\n"[..],
            LineEnding::None,
            Duration::from_millis(300),
            |l| printed.borrow_mut().push(l.to_owned()),
            |w| warned.borrow_mut().push(w.to_owned()),
        )
        .unwrap();
        server.join().unwrap();
        assert_eq!(unanswered, 1);
        let want = format!("{at}>> hi\\tthere");
        assert_eq!(*printed.borrow(), [want.clone(), want]);
        assert_eq!(*warned.borrow(), ["no reply within 300ms"]);
    }
}
