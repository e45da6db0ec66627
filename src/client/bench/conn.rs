//! One connection's state machine: connecting, open, finished; what it has in flight, what
//! it still has to write, and where the echo it reads should be.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use super::error::ErrorKind;
use super::framing::unexpected;
use super::histogram::Tally;
use super::plan::Plan;
/// A message queued on a connection and not yet fully echoed.
#[derive(Clone, Copy)]
pub(super) struct Flight {
    /// Where latency is measured from: when queued, or in open loop the schedule's time if
    /// that was earlier.
    pub(super) intended: Instant,
    /// When it was queued for writing: where the reply timeout runs from.
    pub(super) sent: Instant,
    /// Queued after the warm-up.
    pub(super) measured: bool,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum State {
    /// Connect started at this time.
    Connecting(Instant),
    Open,
    /// Done or failed; never reopened.
    Finished,
}

/// One connection's state on its thread.
pub(super) struct Conn {
    /// Global index: picks the payload and the open-loop phase.
    pub(super) index: usize,
    pub(super) stream: Option<TcpStream>,
    pub(super) state: State,
    /// The payload, repeated (see [`burst`](super::framing::burst)).
    pub(super) burst: Arc<[u8]>,
    pub(super) inflight: VecDeque<Flight>,
    /// Bytes of queued messages not yet written.
    pub(super) to_write: usize,
    /// Where in the payload the next write starts.
    pub(super) write_off: usize,
    /// Where in the payload the next echoed byte belongs.
    pub(super) read_off: usize,
    pub(super) written: u64,
    pub(super) received: u64,
    /// Measured messages this connection may still queue ([`Limit::Messages`](super::Limit::Messages)).
    pub(super) quota: Option<u64>,
    /// Open loop: the intended time of the next message.
    pub(super) next_send: Instant,
    /// Open loop: an entry for this connection is in the worker's `due` heap.
    pub(super) scheduled: bool,
}

impl Conn {
    /// Checks `chunk`, the next bytes of the echo, against what was sent; completes each
    /// message whose last byte it holds.
    pub(super) fn consume(
        &mut self,
        mut chunk: &[u8],
        size: usize,
        now: Instant,
        tally: &mut Tally,
    ) -> Result<(), ErrorKind> {
        // Bytes beyond what was written were never sent by us.
        let awaited = usize::try_from(self.written - self.received).unwrap_or(usize::MAX);
        self.received += chunk.len() as u64;
        let unsolicited = if chunk.len() > awaited {
            let (awaited, extra) = chunk.split_at(awaited);
            chunk = awaited;
            Some(extra[0])
        } else {
            None
        };
        while !chunk.is_empty() {
            let expected = &self.burst[self.read_off..size];
            let n = expected.len().min(chunk.len());
            if chunk[..n] != expected[..n] {
                let at = chunk.iter().zip(expected).position(|(a, b)| a != b);
                return Err(unexpected(at.map_or(0, |i| chunk[i])));
            }
            chunk = &chunk[n..];
            self.read_off += n;
            if self.read_off == size {
                self.read_off = 0;
                // Bytes received never exceed bytes written, which belong to queued messages.
                let Some(flight) = self.inflight.pop_front() else {
                    return Err(ErrorKind::Mismatch);
                };
                tally.complete(flight, now, size);
            }
        }
        unsolicited.map_or(Ok(()), |byte| Err(unexpected(byte)))
    }

    /// Writes queued bytes until done or the socket is full.
    pub(super) fn flush(&mut self, size: usize) -> Result<(), ErrorKind> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.to_write > 0 {
            let len = self.to_write.min(self.burst.len() - self.write_off);
            match stream.write(&self.burst[self.write_off..self.write_off + len]) {
                Ok(0) => return Err(ErrorKind::Closed),
                Ok(n) => {
                    self.to_write -= n;
                    self.written += n as u64;
                    self.write_off = (self.write_off + n) % size;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::of_transfer(&e)),
            }
        }
        Ok(())
    }

    /// Queues one message whose place in the schedule is `scheduled`. Its latency runs from
    /// then, or from now if it goes out early (by at most [`SCHEDULE_SLACK`](super::worker::SCHEDULE_SLACK)).
    pub(super) fn queue(
        &mut self,
        scheduled: Instant,
        now: Instant,
        plan: &Plan<'_>,
        tally: &mut Tally,
    ) {
        let measured = scheduled >= plan.measure_start;
        if measured {
            if let Some(quota) = self.quota.as_mut() {
                *quota -= 1;
            }
            tally.sent += 1;
        }
        self.inflight.push_back(Flight {
            intended: scheduled.min(now),
            sent: now,
            measured,
        });
        self.to_write += plan.options.size;
    }

    /// May a message intended at `at` be queued?
    pub(super) fn may_queue(&self, at: Instant, draining: bool, plan: &Plan<'_>) -> bool {
        !draining && (at < plan.measure_start || self.quota != Some(0))
    }
}
