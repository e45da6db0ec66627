//! Bytes as a report shows them: a request written back in the escapes it was written in,
//! and the excerpt an error shows of a reply.

/// At most this many bytes of a request or reply are shown in an error.
const SHOWN: usize = 60;

/// Bytes as they would be written in a `--send` argument: printable ASCII as is, the rest as
/// `\r`, `\n`, `\t`, `\\` or `\xHH`.
pub(super) fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// What an error shows of some bytes: up to the first line ending (included) and at most
/// [`SHOWN`] bytes, escaped, with `...` when something was left out.
pub(super) fn shown(bytes: &[u8]) -> String {
    let line = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    let cut = line.min(SHOWN);
    let mut s = escape(&bytes[..cut]);
    if cut < bytes.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_bytes_are_escaped_and_cut_to_a_line() {
        assert_eq!(
            shown(b"HTTP/1.0 400\r\nServer: x\r\n"),
            r"HTTP/1.0 400\r\n..."
        );
        assert_eq!(shown(b"\xff\x00ok"), r"\xff\x00ok");
        let long = vec![b'a'; 100];
        assert_eq!(shown(&long), format!("{}...", "a".repeat(SHOWN)));
    }
}
