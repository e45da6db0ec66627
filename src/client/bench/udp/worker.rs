//! One thread of a UDP run: its share of the sockets on one `mio` poller, sending on
//! schedule (or as replies free a slot), reading replies, and timing out the unanswered.

use std::io;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::track::{Flow, Tally};
use super::{Shared, UdpLimit};

/// The longest a poll waits, so that the stop flag is seen soon.
const TICK: Duration = Duration::from_millis(50);

/// How early a datagram may go out: the poller sleeps in whole milliseconds, so waiting for
/// the exact time would send most datagrams up to a millisecond late.
const SCHEDULE_SLACK: Duration = Duration::from_millis(1);

/// The least lateness that makes a datagram skipped, for intervals shorter than it: the
/// poller wakes in whole milliseconds, so a millisecond or two late is its tick, not a stall.
const MIN_STALL: Duration = Duration::from_millis(2);

struct Socket {
    socket: UdpSocket,
    flow: Flow,
    /// Datagrams (sent or skipped) this socket may use; `None`: until the window ends.
    share: Option<u64>,
    /// Open loop: when its first datagram is due.
    first_due: Instant,
    /// Sends that failed.
    failed: u64,
    /// The socket cannot take a datagram now (its buffer is full): try again on the next turn.
    blocked: bool,
}

impl Socket {
    fn sending(&self, now: Instant, end: Option<Instant>, open: bool) -> bool {
        let used = if open {
            self.flow.slots
        } else {
            self.flow.next_seq + self.failed
        };
        self.share.is_none_or(|n| used < n) && end.is_none_or(|end| now < end)
    }
}

/// Runs `sockets` (their run-wide index and socket) to the end of the run.
pub(super) fn run(shared: &Shared<'_>, sockets: Vec<(usize, UdpSocket)>) -> io::Result<Tally> {
    let options = shared.options;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut own: Vec<Socket> = Vec::with_capacity(sockets.len());
    for (i, (index, mut socket)) in sockets.into_iter().enumerate() {
        poll.registry()
            .register(&mut socket, Token(i), Interest::READABLE)?;
        let first_due = match shared.interval {
            Some(every) => shared.start + every.mul_f64(index as f64 / shared.sockets as f64),
            None => shared.start,
        };
        own.push(Socket {
            socket,
            flow: Flow::new(index),
            share: match options.limit {
                UdpLimit::Datagrams(n) => Some(
                    n / shared.sockets as u64
                        + u64::from((index as u64) < n % shared.sockets as u64),
                ),
                UdpLimit::Duration(_) => None,
            },
            first_due,
            failed: 0,
            blocked: false,
        });
    }
    let end = match options.limit {
        UdpLimit::Duration(d) => Some(shared.start + d),
        UdpLimit::Datagrams(_) => None,
    };
    let mut tally = Tally::new();
    let mut buf = Vec::with_capacity(options.payload.size.max(64));
    let mut scratch = Vec::new();
    let mut recv = vec![0u8; 65_536];
    let open = shared.interval.is_some();
    loop {
        if shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let mut wake = now + TICK;
        let mut busy = false;
        for s in &mut own {
            s.flow
                .expire(now, options.reply_timeout, shared.start, &mut tally);
            s.blocked = false;
            match shared.interval {
                None => {
                    // Counted once a turn: each datagram sent takes one more slot.
                    let mut holding = s.flow.holding_slots();
                    while holding < options.pipeline && s.sending(now, end, open) && !s.blocked {
                        send(shared, s, now, now, &mut buf, &mut tally);
                        holding += 1;
                    }
                }
                Some(every) => loop {
                    if !s.sending(now, end, open) || s.blocked {
                        break;
                    }
                    let due = s.first_due + every.mul_f64(s.flow.slots as f64);
                    if due > now + SCHEDULE_SLACK {
                        wake = wake.min(due);
                        break;
                    }
                    if now.saturating_duration_since(due) > every.max(MIN_STALL) {
                        // Its time passed by more than an interval (a stall): skipped, not
                        // sent in a burst.
                        tally.skipped += 1;
                        s.flow.slots += 1;
                        continue;
                    }
                    // Sent up to the slack early, it is timed from when it went out.
                    send(shared, s, due.max(now), now, &mut buf, &mut tally);
                    if !s.blocked {
                        s.flow.slots += 1;
                    }
                },
            }
            if s.sending(now, end, open) || s.flow.in_flight() > 0 {
                busy = true;
            }
            if let Some(expiry) = s.flow.next_expiry(options.reply_timeout) {
                wake = wake.min(expiry);
            }
            if s.blocked {
                wake = wake.min(now + Duration::from_millis(1));
            }
        }
        if let Some(end) = end
            && now < end
        {
            wake = wake.min(end);
        }
        if !busy {
            break;
        }
        let wait = wake.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(wait.max(Duration::from_micros(100))))?;
        for event in &events {
            let s = &mut own[event.token().0];
            read(shared, s, &mut recv, &mut scratch, &mut tally);
        }
    }
    for s in &mut own {
        // Whatever has come meanwhile is taken before the end.
        read(shared, s, &mut recv, &mut scratch, &mut tally);
        s.flow.finish(&mut tally);
    }
    tally.fold();
    Ok(tally)
}

fn send(
    shared: &Shared<'_>,
    s: &mut Socket,
    origin: Instant,
    now: Instant,
    buf: &mut Vec<u8>,
    tally: &mut Tally,
) {
    shared
        .options
        .payload
        .request(s.flow.index, s.flow.next_seq, buf);
    match s.socket.send(buf) {
        Ok(_) => {
            s.flow.sent(origin, now);
            tally.sent += 1;
            tally.bytes_sent += buf.len() as u64;
            tally.last_activity = Some(now);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.blocked = true,
        Err(e) => {
            // Counted against the socket's share, so that a socket that cannot send ends.
            tally.send_errors += 1;
            s.failed += 1;
            if shared.interval.is_some() {
                s.flow.slots += 1;
            }
            tally.error(format!("socket {}: send: {e}", s.flow.index));
            s.blocked = true;
        }
    }
}

fn read(
    shared: &Shared<'_>,
    s: &mut Socket,
    recv: &mut [u8],
    scratch: &mut Vec<u8>,
    t: &mut Tally,
) {
    loop {
        match s.socket.recv(recv) {
            Ok(n) => {
                let now = Instant::now();
                s.flow.reply(
                    &recv[..n],
                    now,
                    shared.start,
                    &shared.options.payload,
                    scratch,
                    t,
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                t.refused += 1;
                t.error(format!(
                    "socket {}: the target refused a datagram (nothing listens there)",
                    s.flow.index
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                t.error(format!("socket {}: receive: {e}", s.flow.index));
                return;
            }
        }
    }
}
