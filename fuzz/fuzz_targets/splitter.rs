//! Coverage-guided fuzzing of the message splitter: `cargo fuzz run splitter` (see the book's
//! Hardening chapter, docs/src/hardening.md).
//!
//! The input's first byte picks `--max-line` (1 to 64) and how to cut the rest into reads; the
//! rest is a line-based session's input. For any input and any cut, the holding splitter
//! must hand on the same messages as for the input in one read, and the passing splitter must
//! return the input unchanged up to `quit` — the properties the proptests check, searched
//! for counterexamples by coverage instead of at random.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpool::server::protocol::{Flow, Splitter};

fn held(max_line: usize, reads: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut s = Splitter::holding(max_line);
    let mut out = Vec::new();
    for read in reads {
        if s.feed(read, &mut |m| out.push(m.text.to_vec())) == Flow::Quit {
            return (out, true);
        }
        assert!(s.held_len() <= max_line + 1);
    }
    let quit = s.finish(&mut |m| out.push(m.text.to_vec())) == Flow::Quit;
    (out, quit)
}

fn echoed(reads: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut s = Splitter::passing();
    let mut out = Vec::new();
    for read in reads {
        if s.feed(read, &mut |m| out.extend_from_slice(m.raw)) == Flow::Quit {
            return (out, true);
        }
    }
    (out, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&knob, body)) = input.split_first() else {
        return;
    };
    let max_line = usize::from(knob % 64) + 1;
    let step = usize::from(knob / 64) + 1; // 1 to 4 bytes per read
    let data = [b"\n".as_slice(), body].concat();
    let reads: Vec<&[u8]> = data.chunks(step).collect();

    assert_eq!(held(max_line, &[&data]), held(max_line, &reads));

    let (whole, whole_quit) = echoed(&[&data]);
    let (split, split_quit) = echoed(&reads);
    assert_eq!(whole_quit, split_quit);
    assert!(data.starts_with(&split));
    if !whole_quit {
        assert_eq!(split, data);
        assert_eq!(whole, data);
    }
});
