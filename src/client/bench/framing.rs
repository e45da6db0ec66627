//! Requests and how their replies are checked: the echo payloads each connection sends and
//! the rule for a byte that does not belong.

use std::sync::Arc;

use crate::server::LineEnding;

use super::error::ErrorKind;
use super::plan::Options;
/// Up to this many bytes of back-to-back copies of a payload are prepared, so that K
/// pipelined messages go out in one write instead of K.
pub(super) const BURST_BYTES: usize = 16 * 1024;

/// Distinct payloads per run; connection `i` sends payload `i % PAYLOAD_VARIANTS`.
pub(super) const PAYLOAD_VARIANTS: usize = 16;

/// Payload bytes: printable, without `q` so that no stretch of the stream can spell `quit`,
/// and without `\r` or `\n`, which belong to the line ending.
pub(super) const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnoprstuvwxyz0123456789-_.:";

/// One message: printable bytes (a different pseudo-random sequence per `variant`, so a byte
/// flipped anywhere is caught), then the line ending, `size` bytes in all.
pub(super) fn payload(variant: usize, size: usize, line_ending: LineEnding) -> Vec<u8> {
    let ending = line_ending.as_bytes();
    let mut out = Vec::with_capacity(size);
    // xorshift64: cheap, deterministic, never zero from a non-zero seed.
    let mut x = (variant as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..size - ending.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
    }
    out.extend_from_slice(ending);
    out
}

/// Back-to-back copies of `payload`: as many as may be in flight, within [`BURST_BYTES`].
pub(super) fn burst(payload: &[u8], options: &Options) -> Arc<[u8]> {
    let copies = options.pipeline.min((BURST_BYTES / payload.len()).max(1));
    payload.repeat(copies).into()
}

/// The error for an unexpected byte. Payloads never contain `q`, so one is a server's `quit`
/// goodbye (tcpool says it to every client when it shuts down): the connection is closing,
/// not echoing wrong bytes.
pub(super) fn unexpected(byte: u8) -> ErrorKind {
    if byte == b'q' {
        ErrorKind::Closed
    } else {
        ErrorKind::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_its_size_ending_and_no_quit() {
        for ending in [LineEnding::None, LineEnding::Lf, LineEnding::CrLf] {
            for size in [2, 3, 64, 1000] {
                let p = payload(3, size, ending);
                assert_eq!(p.len(), size);
                assert!(p.ends_with(ending.as_bytes()));
                let body = &p[..size - ending.as_bytes().len()];
                assert!(!body.iter().any(|b| matches!(b, b'q' | b'\r' | b'\n')));
                assert!(body.iter().all(|b| b.is_ascii_graphic()));
            }
        }
        assert_ne!(
            payload(0, 64, LineEnding::Lf),
            payload(1, 64, LineEnding::Lf)
        );
    }
    #[test]
    fn burst_repeats_the_payload_within_bounds() {
        let options = Options {
            pipeline: 8,
            ..Options::default()
        };
        let p = payload(0, 64, LineEnding::Lf);
        assert_eq!(&*burst(&p, &options), p.repeat(8).as_slice());
        let big = payload(0, BURST_BYTES * 2, LineEnding::Lf);
        assert_eq!(burst(&big, &options).len(), big.len());
    }
}
