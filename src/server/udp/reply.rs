//! What a datagram gets back (`--udp-reply`): its echo, or sockperf's answer.
//!
//! sockperf's client (`sockperf ping-pong`, `under-load`) puts a 14-byte header before its
//! payload: a sequence number (8 bytes), flags (2 bytes) and the length (4 bytes), all in
//! network order. The flags mark a message as the client's (bit 0) and as asking for an
//! answer (bit 1, "pong request"; `under-load` asks once every `--reply-every` messages). Its
//! own server answers only the messages that ask, with the client's mark cleared, and the
//! client drops anything still marked as its own. A plain echo therefore gets no latency
//! figure from sockperf at all; `--udp-reply sockperf` answers as sockperf's server does, so
//! the same generator can load both servers.

/// How the UDP echo answers a datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UdpReply {
    /// Every datagram back to its sender as it came.
    #[default]
    Echo,
    /// sockperf's protocol: only the messages that ask for an answer, marked as the
    /// server's; any other datagram unanswered.
    Sockperf,
}

/// The size of sockperf's header.
const SOCKPERF_HEADER: usize = 14;
/// The byte of the flags that holds the client's mark and the request for an answer (the
/// flags are a big-endian u16 at offset 8, so their low bits are in byte 9).
const SOCKPERF_FLAGS: usize = 9;
const SOCKPERF_CLIENT: u8 = 1;
const SOCKPERF_PONG_REQUEST: u8 = 2;

impl UdpReply {
    /// Turns the datagram in `buf` into its answer, in place and never larger; `false` when
    /// it gets none.
    pub fn answer(self, buf: &mut [u8]) -> bool {
        match self {
            UdpReply::Echo => true,
            UdpReply::Sockperf => {
                if buf.len() < SOCKPERF_HEADER {
                    return false;
                }
                let flags = buf[SOCKPERF_FLAGS];
                if flags & SOCKPERF_CLIENT == 0 || flags & SOCKPERF_PONG_REQUEST == 0 {
                    return false;
                }
                buf[SOCKPERF_FLAGS] = flags & !SOCKPERF_CLIENT;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockperf_message(flags: u8) -> Vec<u8> {
        let mut m = vec![0u8; 64];
        m[..8].copy_from_slice(&7u64.to_be_bytes());
        m[SOCKPERF_FLAGS] = flags;
        m[10..14].copy_from_slice(&64u32.to_be_bytes());
        m
    }

    #[test]
    fn an_echo_answers_everything_unchanged() {
        let mut m = sockperf_message(SOCKPERF_CLIENT);
        let before = m.clone();
        assert!(UdpReply::Echo.answer(&mut m));
        assert_eq!(m, before);
        assert!(UdpReply::Echo.answer(&mut []));
    }

    #[test]
    fn sockperf_answers_only_a_pong_request_and_marks_it_as_the_servers() {
        let mut asks = sockperf_message(SOCKPERF_CLIENT | SOCKPERF_PONG_REQUEST | 4);
        let before = asks.clone();
        assert!(UdpReply::Sockperf.answer(&mut asks));
        assert_eq!(asks[SOCKPERF_FLAGS], SOCKPERF_PONG_REQUEST | 4);
        // Only the client's mark changes: the sequence, length and payload stay.
        assert_eq!(asks[..SOCKPERF_FLAGS], before[..SOCKPERF_FLAGS]);
        assert_eq!(asks[SOCKPERF_FLAGS + 1..], before[SOCKPERF_FLAGS + 1..]);

        let mut silent = sockperf_message(SOCKPERF_CLIENT);
        assert!(!UdpReply::Sockperf.answer(&mut silent));
        // A server's own message (the mark cleared) is not answered: no loop between two.
        let mut servers = sockperf_message(SOCKPERF_PONG_REQUEST);
        assert!(!UdpReply::Sockperf.answer(&mut servers));
        let mut short = vec![SOCKPERF_CLIENT | SOCKPERF_PONG_REQUEST; 13];
        assert!(!UdpReply::Sockperf.answer(&mut short));
    }
}
