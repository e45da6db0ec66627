//! The console's input: one line at a time, bounded, so that a console fed without newlines
//! cannot grow the server.

use std::io::{self, BufRead};

/// What [`read_bounded_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line (or the last, unterminated one) is in the buffer.
    Whole,
    /// A line of this many bytes was longer than the bound: skipped, the buffer is empty.
    TooLong(usize),
    /// End of input.
    End,
}

/// Reads one line into `line` (cleared first), holding at most `max` bytes of it: the rest
/// of a longer line is consumed and dropped as it comes.
pub(super) fn read_bounded_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    line.clear();
    let mut seen = 0usize;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match seen {
                0 => Line::End,
                n if n > max => Line::TooLong(n),
                _ => Line::Whole,
            });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if seen + take <= max {
            line.extend_from_slice(&buf[..take]);
        } else {
            line.clear();
        }
        seen += take;
        input.consume(take);
        if done {
            return Ok(if seen > max {
                Line::TooLong(seen)
            } else {
                Line::Whole
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_bounded() {
        let mut input = io::Cursor::new(b"short\n0123456789\nlast".to_vec());
        let mut line = Vec::new();
        let mut read = || read_bounded_line(&mut input, &mut line, 8).unwrap();
        assert_eq!(read(), Line::Whole);
        assert_eq!(read(), Line::TooLong(11));
        assert_eq!(read(), Line::Whole);
        assert_eq!(read(), Line::End);
        let mut input = io::BufReader::with_capacity(4, &b"abcdefghijkl"[..]);
        assert_eq!(
            read_bounded_line(&mut input, &mut line, 8).unwrap(),
            Line::TooLong(12)
        );
        assert!(line.is_empty());
        let mut input = io::BufReader::with_capacity(2, &b"abc\n"[..]);
        assert_eq!(
            read_bounded_line(&mut input, &mut line, 8).unwrap(),
            Line::Whole
        );
        assert_eq!(line, b"abc\n");
    }
}
