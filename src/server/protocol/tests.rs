use super::splitter::QUIT_PREFIX_MAX;
use super::text::{push_escaped, push_invalid};
use super::*;

fn messages(splitter: &mut Splitter, reads: &[&[u8]]) -> (Vec<(Vec<u8>, bool)>, Flow) {
    let mut out = Vec::new();
    let mut flow = Flow::Continue;
    for read in reads {
        flow = splitter.feed(read, &mut |m| out.push((m.text.to_vec(), m.complete)));
        if flow == Flow::Quit {
            break;
        }
    }
    (out, flow)
}

fn texts(splitter: &mut Splitter, reads: &[&[u8]]) -> Vec<Vec<u8>> {
    messages(splitter, reads)
        .0
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn seed_style_read_is_one_message() {
    let mut s = Splitter::holding(64);
    assert_eq!(texts(&mut s, &[b"hello", b"world"]), [b"hello", b"world"]);
    assert_eq!(s.line_ending(), LineEnding::None);
}

#[test]
fn first_newline_decides_the_line_ending() {
    let mut s = Splitter::holding(64);
    texts(&mut s, &[b"a\r\nb\n"]);
    assert_eq!(s.line_ending(), LineEnding::CrLf);
    let mut s = Splitter::holding(64);
    texts(&mut s, &[b"a\nb\r\n"]);
    assert_eq!(s.line_ending(), LineEnding::Lf);
}

#[test]
fn a_seed_read_is_delivered_before_the_first_newline_arrives() {
    // "ab\r" is a whole seed-style message; the `\n` that follows starts an empty line.
    let mut s = Splitter::holding(64);
    assert_eq!(
        texts(&mut s, &[b"ab\r", b"\ncd\n"]),
        [&b"ab\r"[..], b"", b"cd"]
    );
    assert_eq!(s.line_ending(), LineEnding::Lf);
}

#[test]
fn lone_cr_is_data_and_empty_line_is_a_message() {
    let mut s = Splitter::holding(64);
    assert_eq!(
        texts(&mut s, &[b"a\rb\n\n\r\n"]),
        [b"a\rb".to_vec(), b"".to_vec(), b"".to_vec()]
    );
}

#[test]
fn holding_waits_for_the_end_of_a_line() {
    let mut s = Splitter::holding(64);
    assert_eq!(
        texts(&mut s, &[b"one\ntw", b"o", b"\nthr"]),
        [b"one", b"two"]
    );
    assert_eq!(s.held_len(), 3);
    let mut out = Vec::new();
    s.finish(&mut |m| out.push(m.text.to_vec()));
    assert_eq!(out, [b"thr"]);
}

#[test]
fn overlong_line_is_cut_the_same_however_it_arrives() {
    // The leading `\n` makes the session line-based before the interesting part.
    let input = b"\nabcd\r\nabcde\nabcd\rx\n";
    let whole = texts(&mut Splitter::holding(4), &[input]);
    assert_eq!(whole, [&b""[..], b"abcd", b"abcd", b"e", b"abcd", b"\rx"]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(texts(&mut Splitter::holding(4), &bytes), whole);
}

#[test]
fn overlong_line_is_cut_at_max_line() {
    let mut s = Splitter::holding(4);
    assert_eq!(
        texts(&mut s, &[b"x\nabcdefghij\n"]),
        [
            b"x".to_vec(),
            b"abcd".to_vec(),
            b"efgh".to_vec(),
            b"ij".to_vec()
        ]
    );
}

#[test]
fn overlong_line_is_not_cut_inside_a_character() {
    let mut s = Splitter::holding(4);
    let text = "\nab你好".as_bytes();
    let mut got = texts(&mut s, &[text]);
    s.finish(&mut |m| got.push(m.text.to_vec()));
    assert_eq!(
        got,
        [
            "".as_bytes(),
            "ab".as_bytes(),
            "你".as_bytes(),
            "好".as_bytes()
        ]
    );
}

#[test]
fn seed_style_holding_keeps_a_split_character_whole() {
    let bytes = "你好".as_bytes();
    let mut s = Splitter::holding(64);
    let got = texts(&mut s, &[&bytes[..2], &bytes[2..4], &bytes[4..]]);
    assert_eq!(got, ["你".as_bytes(), "好".as_bytes()]);
}

#[test]
fn passing_never_holds_bytes_back() {
    let mut s = Splitter::passing();
    let (got, _) = messages(&mut s, &[b"x\nab", b"cd\nef"]);
    assert_eq!(
        got,
        [
            (b"x".to_vec(), true),
            (b"ab".to_vec(), false),
            (b"cd".to_vec(), true),
            (b"ef".to_vec(), false)
        ]
    );
}

#[test]
fn quit_stops_the_splitter() {
    for reads in [
        &[&b"quit"[..]][..],
        &[b"a\nquit\nb\n"],
        &[b"a\r\nquit\r\nb"],
        &[b"a\nqu", b"it\n"],
        &[b"a\nquit\r", b"\n"],
    ] {
        for mut s in [Splitter::holding(64), Splitter::passing()] {
            let (_, flow) = messages(&mut s, reads);
            assert_eq!(flow, Flow::Quit, "{reads:?} hold={}", s.hold);
        }
    }
}

#[test]
fn quit_is_exact() {
    for read in [&b"Quit"[..], b" quit", b"quit ", b"\nquit\t\n", b"quitquit"] {
        let mut s = Splitter::holding(64);
        let (got, flow) = messages(&mut s, &[read]);
        assert_eq!(flow, Flow::Continue, "{read:?}");
        assert!(!got.is_empty());
    }
    // `quit\n` from a seed-style session is a line `quit`.
    let mut s = Splitter::passing();
    assert_eq!(messages(&mut s, &[b"quit\n"]).1, Flow::Quit);
    // A long line that starts with `quit` is not `quit`.
    let mut s = Splitter::passing();
    assert_eq!(messages(&mut s, &[b"\nquitt", b"\n"]).1, Flow::Continue);
}

#[test]
fn held_memory_stays_near_max_line_whatever_the_reads() {
    let mut s = Splitter::holding(1000);
    let big = vec![b'x'; 64 * 1024];
    let mut pieces = 0;
    s.feed(b"\n", &mut |_| {});
    for _ in 0..4 {
        s.feed(&big, &mut |m| {
            assert!(m.text.len() <= 1000);
            pieces += 1;
        });
        assert!(s.held_len() <= 1001);
        assert!(s.held_capacity() <= 1002, "{}", s.held_capacity());
    }
    assert_eq!(pieces, 4 * 64 * 1024 / 1000);
}

#[test]
fn held_buffer_shrinks_after_a_burst() {
    let mut s = Splitter::holding(1 << 20);
    let big = vec![b'x'; 100_000];
    texts(&mut s, &[b"\n", &big]);
    assert!(s.held_capacity() >= 100_000);
    texts(&mut s, &[b"\n"]);
    assert_eq!(s.held_len(), 0);
    assert!(s.held_capacity() <= IDLE_CAPACITY);
}

#[test]
fn incomplete_tail_counts_only_real_prefixes() {
    let ni = "你".as_bytes();
    assert_eq!(incomplete_utf8_tail(&ni[..1]), 1);
    assert_eq!(incomplete_utf8_tail(&ni[..2]), 2);
    assert_eq!(incomplete_utf8_tail(ni), 0);
    assert_eq!(incomplete_utf8_tail(b"abc\xff"), 0);
    assert_eq!(incomplete_utf8_tail(b"\x80\x80"), 0);
    assert_eq!(incomplete_utf8_tail(b""), 0);
}

#[test]
fn escape_neutralises_terminal_control() {
    assert_eq!(escape(b"\x1b[2J\x07\x00"), r"\x1b[2J\x07\x00");
    assert_eq!(escape(b"a\xff\xfeb\xe4\xbd"), r"a\xff\xfeb\xe4\xbd");
    assert_eq!(escape("a\u{202e}b\u{85}".as_bytes()), r"a\u{202e}b\x85");
}

#[test]
fn utf8_carry_joins_split_characters() {
    let bytes = "é你".as_bytes();
    let mut carry = Utf8Carry::default();
    assert_eq!(carry.push(&bytes[..1]), b"");
    assert_eq!(carry.push(&bytes[1..3]), "é".as_bytes());
    assert_eq!(carry.push(&bytes[3..]), "你".as_bytes());
    assert!(carry.finish().is_empty());
}

mod properties {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Input built from pieces that matter to the splitter: line endings, `quit` lines,
    /// multi-byte characters, arbitrary bytes.
    fn input() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"quit".to_vec()),
            Just(b"quit\n".to_vec()),
            Just(b"quit\r\n".to_vec()),
            Just("你好".as_bytes().to_vec()),
            vec(any::<u8>(), 0..12),
            vec(b'a'..=b'z', 0..80),
        ];
        vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    /// Cuts `data` at the given points (taken modulo its length) into reads.
    fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut reads = Vec::new();
        let mut start = 0;
        for p in points {
            reads.push(&data[start..p]);
            start = p;
        }
        reads.push(&data[start..]);
        reads
    }

    /// Every message a holding splitter hands on (with end of input), and whether it quit.
    fn held_messages(max_line: usize, reads: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
        let mut s = Splitter::holding(max_line);
        let mut out = Vec::new();
        for read in reads {
            if s.feed(read, &mut |m| out.push(m.text.to_vec())) == Flow::Quit {
                return (out, true);
            }
        }
        let quit = s.finish(&mut |m| out.push(m.text.to_vec())) == Flow::Quit;
        (out, quit)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_line_based_session_gets_the_same_messages_however_reads_split(
            body in input(),
            cuts in vec(any::<usize>(), 0..24),
            max_line in 1usize..48,
        ) {
            // The leading newline makes the session line-based before the body.
            let data = [b"\n".as_slice(), &body].concat();
            let whole = held_messages(max_line, &[&data]);
            let split = held_messages(max_line, &split_at(&data, &cuts));
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn echo_returns_the_input_unchanged_up_to_quit(
            body in input(),
            cuts in vec(any::<usize>(), 0..24),
        ) {
            let data = [b"\n".as_slice(), &body].concat();
            let run = |reads: &[&[u8]]| {
                let mut s = Splitter::passing();
                let mut echoed = Vec::new();
                for read in reads {
                    if s.feed(read, &mut |m| echoed.extend_from_slice(m.raw)) == Flow::Quit {
                        return (echoed, true);
                    }
                }
                (echoed, false)
            };
            let (whole, whole_quit) = run(&[&data]);
            let (split, split_quit) = run(&split_at(&data, &cuts));
            // `quit` is recognised however the reads split.
            prop_assert_eq!(whole_quit, split_quit);
            prop_assert!(data.starts_with(&split));
            if whole_quit {
                // Split reads may have passed on the start of the `quit` line already.
                prop_assert!(split.len() >= whole.len());
                prop_assert!(split.len() - whole.len() <= QUIT_PREFIX_MAX);
            } else {
                prop_assert_eq!(&split, &data);
                prop_assert_eq!(&whole, &data);
            }
        }

        #[test]
        fn nothing_panics_and_held_memory_stays_bounded(
            reads in vec(vec(any::<u8>(), 0..300), 0..20),
            max_line in 1usize..64,
            hold in any::<bool>(),
        ) {
            let mut s = if hold { Splitter::holding(max_line) } else { Splitter::passing() };
            for read in &reads {
                let mut seen = 0usize;
                if s.feed(read, &mut |m| seen += m.raw.len()) == Flow::Quit {
                    break;
                }
                let bound = if hold { max_line + 1 } else { QUIT_PREFIX_MAX };
                prop_assert!(s.held_len() <= bound.max(3));
            }
            s.finish(&mut |_| {});
        }

        #[test]
        fn escape_matches_escaping_every_character_one_by_one(
            pieces in vec(prop_oneof![
                vec(any::<u8>(), 0..20),
                vec(b' '..=b'~', 0..40),
                Just("\u{85}\u{9f}\u{a0}\u{202e}\u{2066}\u{2028}\u{2029}\u{2030}".as_bytes().to_vec()),
                Just("你好, €\t\x1b\x7f".as_bytes().to_vec()),
            ], 0..12),
        ) {
            let bytes = pieces.concat();
            let mut expected = String::new();
            for chunk in bytes.utf8_chunks() {
                chunk.valid().chars().for_each(|c| push_escaped(&mut expected, c));
                push_invalid(&mut expected, chunk.invalid());
            }
            prop_assert_eq!(escape(&bytes), expected);
        }

        #[test]
        fn escape_never_lets_a_control_character_through(bytes in vec(any::<u8>(), 0..200)) {
            let shown = escape(&bytes);
            prop_assert!(!shown.chars().any(|c| c.is_control()));
        }
    }
}
