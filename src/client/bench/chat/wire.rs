//! What the clients write: how each joins, and each line a sender sends, in its protocol.

use std::io::Write as _;

use super::track;
use super::{ChatProtocol, Shared};

/// Queues what a client sends once connected; `true` if it is ready at once (a Redis
/// sender), `false` if it waits for a reply (a nickname granted, a greeting, a
/// subscription confirmed).
pub(super) fn join(out: &mut Vec<u8>, shared: &Shared<'_>, sender: bool, index: usize) -> bool {
    match (shared.options.protocol, sender) {
        (ChatProtocol::Chat, true) => {
            let _ = writeln!(out, "/nick {}", nick(shared.run, index));
            false
        }
        (ChatProtocol::Chat, false) => false,
        (ChatProtocol::Redis, true) => true,
        (ChatProtocol::Redis, false) => {
            let room = room(shared.run);
            let _ = write!(
                out,
                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{room}\r\n",
                room.len()
            );
            false
        }
    }
}

/// Sender `s`'s nickname in run `run`: letters and digits, unique to the run.
pub(super) fn nick(run: u32, s: usize) -> String {
    format!("tcb{run:08x}s{s}")
}

/// The Redis channel of run `run`.
fn room(run: u32) -> String {
    format!("tcpool-chat-{run:08x}")
}

/// Line `seq` of sender `s`, as its protocol sends it.
pub(super) fn line(out: &mut Vec<u8>, shared: &Shared<'_>, s: usize, seq: u64, micros: u64) {
    match shared.options.protocol {
        ChatProtocol::Chat => {
            track::payload(out, shared.run, s, seq, micros);
            out.push(b'\n');
        }
        ChatProtocol::Redis => {
            let mut payload = Vec::with_capacity(48);
            track::payload(&mut payload, shared.run, s, seq, micros);
            let room = room(shared.run);
            let _ = write!(
                out,
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{room}\r\n${}\r\n",
                room.len(),
                payload.len()
            );
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\n");
        }
    }
}
