//! Manual mode over UDP (`--mode manual --udp`): a datagram is not echoed but shown on the
//! console under a pseudo-session id for its source, `udp#N`, and the operator answers it with
//! `@uN text` (or `@udp#N text`), which leaves as one datagram to that source.
//!
//! The [`Desk`] is a bounded table of the recent sources, shared by the workers (who add what
//! they hear) and the console (who answers): one short lock a datagram, never held while
//! printing or sending. A source keeps its id while it stays in the table; past `--udp-peers`
//! sources the least recently heard is forgotten, and comes back under a new id. A reply
//! leaves from a second handle on the socket the source last wrote to: a non-blocking send,
//! so a full buffer is an error line, never a wait.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::server::modes::shown_line;
use crate::server::operator::output::Printer;
use crate::server::session::registry::Registry;
use crate::units::human_duration;

/// What the table knows of one source.
#[derive(Debug, Clone)]
struct Entry {
    addr: SocketAddr,
    /// The worker socket it last wrote to: replies leave from its clone.
    via: usize,
    /// Its place in the order of hearing (the larger, the more recent).
    heard: u64,
    first: Instant,
    /// The line ending its last datagram had (`""`, `"\n"` or `"\r\n"`): replies end so too.
    ending: &'static str,
    msgs_in: u64,
    bytes_in: u64,
    msgs_out: u64,
    bytes_out: u64,
}

#[derive(Debug, Default)]
struct Table {
    capacity: usize,
    next_id: u64,
    tick: u64,
    by_addr: HashMap<SocketAddr, u64>,
    by_id: HashMap<u64, Entry>,
    /// `heard` to id, the oldest first.
    order: BTreeMap<u64, u64>,
}

/// The UDP pseudo-sessions of manual mode.
#[derive(Debug)]
pub struct Desk {
    table: Mutex<Table>,
    /// Second handles on the workers' sockets, in the workers' order.
    sockets: Mutex<Vec<UdpSocket>>,
    /// The pseudo-session that spoke last (0: none).
    last: AtomicU64,
    printer: Printer,
    registry: Registry,
}

/// Why a reply did not leave.
#[derive(Debug)]
pub enum ReplyError {
    /// No such pseudo-session: never heard from, or forgotten since.
    Gone,
    /// The socket refused it (a full send buffer, say).
    Send(io::Error),
}

impl Desk {
    /// A table of at most `capacity` sources (at least one), printing through `printer`; a
    /// datagram makes its source the last speaker instead of any session of `registry`.
    pub fn new(capacity: usize, printer: Printer, registry: Registry) -> Self {
        Desk {
            table: Mutex::new(Table {
                capacity: capacity.max(1),
                next_id: 1,
                ..Table::default()
            }),
            sockets: Mutex::new(Vec::new()),
            last: AtomicU64::new(0),
            printer,
            registry,
        }
    }

    /// The sockets replies leave from: second handles on the workers', in their order.
    pub(crate) fn attach(&self, sockets: Vec<UdpSocket>) {
        *self.sockets.lock() = sockets;
    }

    /// A datagram `data` from `addr` arrived on worker `via`'s socket: shows it on the
    /// console under its source's id (and, for a new source, which address that id is).
    pub(crate) fn heard(&self, addr: SocketAddr, via: usize, data: &[u8]) {
        let (text, ending) = split_ending(data);
        let (id, fresh) = {
            let mut t = self.table.lock();
            t.heard(addr, via, data.len(), ending)
        };
        self.last.store(id, Ordering::Relaxed);
        self.registry.clear_last_speaker();
        if fresh {
            self.printer
                .print(&format!("* udp#{id} is {addr} (answer with @u{id} text)"));
        }
        self.printer.print(&shown_line(&format!("udp#{id}"), text));
    }

    /// The pseudo-session that spoke last, if a datagram came after every session's message.
    pub fn last_speaker(&self) -> Option<u64> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// The ids in the table now, the oldest first.
    pub fn ids(&self) -> Vec<u64> {
        self.table.lock().order.values().copied().collect()
    }

    /// Sends `text` (with the line ending the source's last datagram had) as one datagram to
    /// pseudo-session `id`.
    ///
    /// # Errors
    ///
    /// [`ReplyError::Gone`] when `id` is not in the table; [`ReplyError::Send`] when the
    /// socket refuses the datagram.
    pub fn reply(&self, id: u64, text: &str) -> Result<(), ReplyError> {
        let (addr, via, ending) = {
            let t = self.table.lock();
            let e = t.by_id.get(&id).ok_or(ReplyError::Gone)?;
            (e.addr, e.via, e.ending)
        };
        let datagram = format!("{text}{ending}");
        {
            let sockets = self.sockets.lock();
            let socket = sockets
                .get(via)
                .or_else(|| sockets.first())
                .ok_or(ReplyError::Gone)?;
            socket
                .send_to(datagram.as_bytes(), addr)
                .map_err(ReplyError::Send)?;
        }
        if let Some(e) = self.table.lock().by_id.get_mut(&id) {
            e.msgs_out += 1;
            e.bytes_out += datagram.len() as u64;
        }
        Ok(())
    }

    /// Forgets pseudo-session `id` (after `@uN quit`): the source's next datagram gets a new
    /// id. Whether it was there.
    pub fn forget(&self, id: u64) -> bool {
        let mut t = self.table.lock();
        let Some(e) = t.by_id.remove(&id) else {
            return false;
        };
        t.by_addr.remove(&e.addr);
        t.order.remove(&e.heard);
        true
    }

    /// `/list`'s lines for the pseudo-sessions, in its columns (`width`: the peer column's).
    pub fn list_lines(&self, width: usize) -> Vec<String> {
        // Copied out, and formatted with the lock released: a worker waits for a copy only.
        let rows: Vec<(u64, Entry)> = {
            let t = self.table.lock();
            let ids = t.order.values();
            ids.filter_map(|&id| t.by_id.get(&id).map(|e| (id, e.clone())))
                .collect()
        };
        rows.into_iter()
            .map(|(id, e)| {
                format!(
                    "{:>6}  {:<width$}  {:>9}  {:>9}  {:>11}  {:>9}  {:>11}  udp",
                    format!("u{id}"),
                    e.addr.to_string(),
                    human_duration(e.first.elapsed()),
                    e.msgs_in,
                    e.bytes_in,
                    e.msgs_out,
                    e.bytes_out,
                )
            })
            .collect()
    }
}

impl Table {
    /// Counts a datagram from `addr`; returns its id and whether the source is new.
    fn heard(
        &mut self,
        addr: SocketAddr,
        via: usize,
        len: usize,
        ending: &'static str,
    ) -> (u64, bool) {
        self.tick += 1;
        let tick = self.tick;
        let known = self.by_addr.get(&addr).copied();
        let (id, fresh) = match known {
            Some(id) => (id, false),
            None => {
                if self.by_id.len() >= self.capacity
                    && let Some((_, oldest)) = self.order.pop_first()
                    && let Some(gone) = self.by_id.remove(&oldest)
                {
                    self.by_addr.remove(&gone.addr);
                }
                let id = self.next_id;
                self.next_id += 1;
                self.by_addr.insert(addr, id);
                self.by_id.insert(
                    id,
                    Entry {
                        addr,
                        via,
                        heard: tick,
                        first: Instant::now(),
                        ending,
                        msgs_in: 0,
                        bytes_in: 0,
                        msgs_out: 0,
                        bytes_out: 0,
                    },
                );
                (id, true)
            }
        };
        if let Some(e) = self.by_id.get_mut(&id) {
            self.order.remove(&e.heard);
            e.heard = tick;
            e.via = via;
            e.ending = ending;
            e.msgs_in += 1;
            e.bytes_in += len as u64;
        }
        self.order.insert(tick, id);
        (id, fresh)
    }
}

/// A datagram's text and the line ending it had, as a line of TCP would be framed.
fn split_ending(data: &[u8]) -> (&[u8], &'static str) {
    if let Some(text) = data.strip_suffix(b"\r\n") {
        (text, "\r\n")
    } else if let Some(text) = data.strip_suffix(b"\n") {
        (text, "\n")
    } else {
        (data, "")
    }
}

/// Parses a pseudo-session id as the operator types it: `u3`, `udp3` or `udp#3`.
pub fn parse_id(who: &str) -> Option<u64> {
    let rest = who.strip_prefix("udp").or_else(|| who.strip_prefix('u'))?;
    let rest = rest.strip_prefix('#').unwrap_or(rest);
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok().filter(|&id| id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ids_stay_while_a_source_is_in_the_table_and_change_when_it_comes_back() {
        let mut t = Table {
            capacity: 2,
            next_id: 1,
            ..Table::default()
        };
        assert_eq!(t.heard(addr(1), 0, 5, ""), (1, true));
        assert_eq!(t.heard(addr(2), 0, 5, ""), (2, true));
        assert_eq!(t.heard(addr(1), 1, 5, "\n"), (1, false));
        // 2 is the least recently heard: it goes for 3.
        assert_eq!(t.heard(addr(3), 0, 5, ""), (3, true));
        assert!(!t.by_id.contains_key(&2));
        assert_eq!(t.by_id.len(), 2);
        assert_eq!(t.order.len(), 2);
        assert_eq!(t.heard(addr(2), 0, 5, ""), (4, true));
        assert_eq!(t.by_id[&4].msgs_in, 1);
        assert!(t.by_addr.len() <= 2);
    }

    #[test]
    fn operator_ids_parse_in_their_three_spellings_only() {
        assert_eq!(parse_id("u3"), Some(3));
        assert_eq!(parse_id("udp3"), Some(3));
        assert_eq!(parse_id("udp#12"), Some(12));
        for bad in ["u", "u0", "udp#", "ux", "3", "#3", "u-1", "u+1", "udp#3x"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn line_endings_are_split_off_like_a_tcp_line() {
        assert_eq!(split_ending(b"hi\r\n"), (&b"hi"[..], "\r\n"));
        assert_eq!(split_ending(b"hi\n"), (&b"hi"[..], "\n"));
        assert_eq!(split_ending(b"hi"), (&b"hi"[..], ""));
    }
}
