//! What a UDP bench sends and how it tells which request a reply answers, and whether the
//! reply is right.
//!
//! Bench's own payload (no `--send`): bytes 0..8 zero (the server's stamp slot), 8..16 the
//! socket's sequence number (big-endian), 16.. a filler that depends on the socket and the
//! sequence number, so a reply meant for another socket or another datagram is caught. With
//! `--send` the request is the template, and the sequence number (cut to the id field's
//! width) is written into the id field; replies are matched by that field.

use crate::client::bench::Template;

/// The smallest datagram of bench's own payload: stamp slot and sequence number.
pub const MIN_OWN_SIZE: usize = 16;

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Where a request's number sits, in the request and in its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdField {
    /// Its first byte.
    pub offset: usize,
    /// Its width, 1 to 8 bytes, big-endian.
    pub len: usize,
}

impl IdField {
    /// Parses `OFFSET:LEN`.
    ///
    /// # Errors
    ///
    /// Not two numbers, or a width outside 1 to 8.
    pub fn parse(text: &str) -> Result<IdField, String> {
        let (offset, len) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: write OFFSET:LEN, such as 0:2"))?;
        let offset: usize = offset
            .trim()
            .parse()
            .map_err(|_| format!("{offset:?} is not a byte offset"))?;
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| format!("{len:?} is not a width in bytes"))?;
        if !(1..=8).contains(&len) {
            return Err(format!("the id field is 1 to 8 bytes wide, not {len}"));
        }
        Ok(IdField { offset, len })
    }

    /// Bench's own payload: the sequence number at bytes 8..16.
    pub const OWN: IdField = IdField { offset: 8, len: 8 };

    fn end(self) -> usize {
        self.offset + self.len
    }

    /// The values the field can hold, as a mask.
    fn mask(self) -> u64 {
        if self.len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.len)) - 1
        }
    }

    /// Writes `seq`, cut to the field's width, into `datagram`.
    pub(super) fn write(self, datagram: &mut [u8], seq: u64) {
        let bytes = (seq & self.mask()).to_be_bytes();
        datagram[self.offset..self.end()].copy_from_slice(&bytes[8 - self.len..]);
    }

    /// The field's value in `datagram`, if it is long enough to hold it.
    pub(super) fn read(self, datagram: &[u8]) -> Option<u64> {
        let field = datagram.get(self.offset..self.end())?;
        Some(field.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    /// The latest sequence number at most `highest` that the field's value `id` can stand
    /// for (the field wraps when it is narrower than 8 bytes).
    pub(super) fn unwrap(self, id: u64, highest: u64) -> Option<u64> {
        let mask = self.mask();
        let base = highest & !mask;
        let seq = base | (id & mask);
        if seq <= highest {
            Some(seq)
        } else {
            base.checked_sub(1)
                .map(|below| (below & !mask) | (id & mask))
        }
    }
}

/// How a reply is judged once matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Bench's own payload: the reply is the request, the stamp slot aside.
    Own,
    /// The reply is exactly these bytes, with the request's id in the id field.
    Exact(Template),
    /// The reply is exactly this many bytes.
    Size(usize),
    /// Any reply with the id is right.
    Any,
}

/// What each datagram is.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// `None`: bench's own payload of `size` bytes.
    pub send: Option<Template>,
    /// Bench's own payload's size.
    pub size: usize,
    /// Where the request's number is.
    pub id: IdField,
    /// How a reply is judged.
    pub check: Check,
}

/// The filler of datagram `seq` from socket `socket`, its bytes from [`MIN_OWN_SIZE`] on:
/// printable, different from socket to socket and datagram to datagram. Byte `i` is
/// `b'!' + (socket * 31 + seq * 7 + i) % 94`, so every filler is a run of one table that
/// counts through the 94 printable characters, and writing or checking one is a copy or a
/// compare, not arithmetic a byte (which took a third of the generator's time at 1,400 B).
fn filler(socket: usize, seq: u64, len: usize) -> &'static [u8] {
    static RUNS: std::sync::LazyLock<Box<[u8]>> = std::sync::LazyLock::new(|| {
        (0..FILLER_CYCLE + MAX_DATAGRAM)
            .map(|j| b'!' + (j % FILLER_CYCLE) as u8)
            .collect()
    });
    let start = (socket as u64)
        .wrapping_mul(31)
        .wrapping_add(seq.wrapping_mul(7))
        .wrapping_add(MIN_OWN_SIZE as u64)
        % FILLER_CYCLE as u64;
    let start = start as usize;
    &RUNS[start..start + len.min(MAX_DATAGRAM)]
}

/// The printable characters the filler counts through.
const FILLER_CYCLE: usize = 94;

impl Payload {
    /// Datagram `seq` of socket `socket`, written into `out` (cleared first).
    pub(super) fn request(&self, socket: usize, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        match &self.send {
            None => {
                out.extend_from_slice(&[0; 8]);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(filler(socket, seq, self.size - MIN_OWN_SIZE));
            }
            Some(template) => {
                template.render(socket, seq, out);
                if out.len() < self.id.end() {
                    out.resize(self.id.end(), 0);
                }
                self.id.write(out, seq);
            }
        }
    }

    /// Whether `reply` is a right answer to datagram `seq` of socket `socket`.
    pub(super) fn right(
        &self,
        socket: usize,
        seq: u64,
        reply: &[u8],
        scratch: &mut Vec<u8>,
    ) -> bool {
        match &self.check {
            Check::Own => {
                reply.len() == self.size
                    && reply[8..16] == seq.to_be_bytes()
                    && reply[MIN_OWN_SIZE..] == *filler(socket, seq, self.size - MIN_OWN_SIZE)
            }
            Check::Exact(template) => {
                scratch.clear();
                template.render(socket, seq, scratch);
                if scratch.len() >= self.id.end() {
                    self.id.write(scratch, seq);
                }
                reply == &scratch[..]
            }
            Check::Size(n) => reply.len() == *n,
            Check::Any => true,
        }
    }

    /// Bench's own payload: the datagram a reply answers when one bit of its number was
    /// flipped on the way: the number at most `highest` one bit away from the one it reads
    /// whose filler the reply carries. `None` for any other payload, a reply too short to
    /// carry a filler, or none that fits. A reply cut short is judged by what it has left.
    /// The filler repeats every 94 numbers, and no one-bit change is a multiple of 94, so at
    /// most one number fits.
    pub(super) fn recover(&self, socket: usize, reply: &[u8], highest: u64) -> Option<u64> {
        if self.send.is_some() || reply.len() > self.size || reply.len() <= MIN_OWN_SIZE {
            return None;
        }
        let read = IdField::OWN.read(reply)?;
        (0..64)
            .map(|bit| read ^ (1u64 << bit))
            .filter(|&seq| seq <= highest)
            .find(|&seq| reply[MIN_OWN_SIZE..] == *filler(socket, seq, reply.len() - MIN_OWN_SIZE))
    }

    /// The server's stamp in a reply to bench's own payload: its first 8 bytes when nonzero.
    pub(super) fn stamp(&self, reply: &[u8]) -> Option<u64> {
        if self.send.is_some() {
            return None;
        }
        let slot: [u8; 8] = reply.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(slot)).filter(|n| *n != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrow_id_unwraps_to_the_latest_number_it_can_stand_for() {
        let id = IdField { offset: 0, len: 2 };
        assert_eq!(id.unwrap(5, 10), Some(5));
        assert_eq!(id.unwrap(11, 10), None);
        assert_eq!(id.unwrap(0xFFFF, 0x1_0003), Some(0xFFFF));
        assert_eq!(id.unwrap(2, 0x1_0003), Some(0x1_0002));
        let own = IdField::OWN;
        assert_eq!(own.unwrap(123_456_789, 200_000_000), Some(123_456_789));
    }

    #[test]
    fn the_id_is_written_and_read_big_endian() {
        let id = IdField::parse("1:2").unwrap();
        let mut d = vec![9u8; 4];
        id.write(&mut d, 0x1_0203);
        assert_eq!(d, [9, 2, 3, 9]);
        assert_eq!(id.read(&d), Some(0x0203));
        assert_eq!(id.read(&d[..2]), None);
        assert!(IdField::parse("0:9").is_err());
        assert!(IdField::parse("2").is_err());
    }

    #[test]
    fn own_payload_checks_everything_but_the_stamp_slot() {
        let p = Payload {
            send: None,
            size: 40,
            id: IdField::OWN,
            check: Check::Own,
        };
        let mut d = Vec::new();
        p.request(3, 77, &mut d);
        assert_eq!(d.len(), 40);
        assert_eq!(IdField::OWN.read(&d), Some(77));
        let mut scratch = Vec::new();
        assert!(p.right(3, 77, &d, &mut scratch));
        assert_eq!(p.stamp(&d), None);
        d[..8].copy_from_slice(&5u64.to_be_bytes());
        assert!(p.right(3, 77, &d, &mut scratch));
        assert_eq!(p.stamp(&d), Some(5));
        assert!(!p.right(4, 77, &d, &mut scratch));
        d[30] ^= 1;
        assert!(!p.right(3, 77, &d, &mut scratch));
        assert!(!p.right(3, 77, &d[..39], &mut scratch));
    }

    #[test]
    fn a_bit_flipped_in_the_number_still_names_the_datagram() {
        let p = Payload {
            send: None,
            size: 32,
            id: IdField::OWN,
            check: Check::Own,
        };
        let mut d = Vec::new();
        for (seq, bit) in [(77u64, 0), (77, 5), (1000, 9), (0, 3), (5, 63)] {
            p.request(2, seq, &mut d);
            d[8 + 7 - bit / 8] ^= 1 << (bit % 8);
            let highest = 2000;
            assert_eq!(p.recover(2, &d, highest), Some(seq), "{seq} bit {bit}");
        }
        // A flip in the filler is no flip of the number.
        p.request(2, 77, &mut d);
        d[20] ^= 1;
        assert_eq!(p.recover(2, &d, 2000), None);
        // Cut short, told by what is left of the filler.
        p.request(2, 77, &mut d);
        d[12] ^= 4;
        assert_eq!(p.recover(2, &d[..20], 2000), Some(77));
        // Too short for a filler: nothing to tell by.
        let short = Payload { size: 16, ..p };
        short.request(2, 77, &mut d);
        d[15] ^= 1;
        assert_eq!(short.recover(2, &d, 2000), None);
    }

    #[test]
    fn a_template_gets_the_id_and_an_exact_reply_is_compared_with_it() {
        let t = Template::parse(r"\x00\x00\x00\x00\x00\x01\x00\x00get k\r\n").unwrap();
        let e = Template::parse(r"\x00\x00\x00\x00\x00\x01\x00\x00END\r\n").unwrap();
        let p = Payload {
            send: Some(t),
            size: 0,
            id: IdField::parse("0:2").unwrap(),
            check: Check::Exact(e),
        };
        let mut d = Vec::new();
        p.request(0, 0x0102, &mut d);
        assert_eq!(&d[..2], &[1, 2]);
        assert_eq!(&d[8..], b"get k\r\n");
        let mut reply = b"\x01\x02\x00\x00\x00\x01\x00\x00END\r\n".to_vec();
        let mut scratch = Vec::new();
        assert!(p.right(0, 0x0102, &reply, &mut scratch));
        reply[1] = 3;
        assert!(!p.right(0, 0x0102, &reply, &mut scratch));
    }
}
