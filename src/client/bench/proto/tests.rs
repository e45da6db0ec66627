use super::*;
use proptest::prelude::*;

const LIMIT: u64 = 512 << 20;

fn http() -> Framed {
    Framed::Http1 { ok: 200..=299 }
}

/// Feeds `stream` in pieces cut at `cuts`; returns each reply's (end offset, class, prefix,
/// close) or the protocol error.
fn parse_cut(framed: &Framed, stream: &[u8], cuts: &[usize]) -> Result<Vec<(usize, Done)>, String> {
    let mut parser = Parser::new(framed.clone(), LIMIT);
    let mut out = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < stream.len()).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let mut at = 0;
    for end in bounds {
        while at < end {
            match parser.feed(&stream[at..end], false) {
                Ok(Step::Need) => at = end,
                Ok(Step::Done(done)) => {
                    at += done.used;
                    // Where it ended counts; how much of the last piece that was does not.
                    out.push((at, Done { used: 0, ..done }));
                }
                Err(bad) => return Err(bad.message),
            }
        }
    }
    if !parser.idle() {
        return Err("incomplete".into());
    }
    Ok(out)
}

fn classes(framed: &Framed, stream: &[u8]) -> Vec<(usize, Class, Option<String>)> {
    let whole = parse_cut(framed, stream, &[]).unwrap();
    // Split at every byte, and one byte at a time: the same replies end at the same places.
    for cut in 0..stream.len() {
        assert_eq!(
            parse_cut(framed, stream, &[cut]).unwrap(),
            whole,
            "cut at {cut}"
        );
    }
    let every: Vec<usize> = (0..stream.len()).collect();
    assert_eq!(parse_cut(framed, stream, &every).unwrap(), whole);
    whole
        .into_iter()
        .map(|(end, d)| (end, d.class, d.prefix))
        .collect()
}

#[test]
fn resp2_replies_end_where_they_do_split_anywhere() {
    let stream = b"+OK\r\n-NOAUTH Authentication required.\r\n:42\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n-ERR x\r\n";
    let got = classes(&Framed::Resp, stream);
    let want = [
        (5, Class::Ok, None),
        (39, Class::Error, Some("NOAUTH".into())),
        (44, Class::Ok, None),
        (55, Class::Ok, None),
        (60, Class::Miss, None),
        (66, Class::Ok, None),
        (71, Class::Miss, None),
        (75, Class::Ok, None),
        (99, Class::Ok, None),
        (107, Class::Error, Some("ERR".into())),
    ];
    assert_eq!(got, want);
}

#[test]
fn resp3_types_are_framed() {
    let stream = b"_\r\n#t\r\n,3.14\r\n(12345678901234567890\r\n!9\r\nSYNTAX xy\r\n=7\r\ntxt:abc\r\n%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n~2\r\n+x\r\n+y\r\n>2\r\n+message\r\n+hi\r\n|1\r\n+ttl\r\n:3\r\n+OK\r\n";
    let got: Vec<Class> = classes(&Framed::Resp, stream)
        .into_iter()
        .map(|(_, c, _)| c)
        .collect();
    use Class::*;
    assert_eq!(got, [Miss, Ok, Ok, Ok, Error, Ok, Ok, Ok, Ok, Ok]);
    let blob = parse_cut(&Framed::Resp, b"!9\r\nSYNTAX xy\r\n", &[]).unwrap();
    assert_eq!(blob[0].1.prefix.as_deref(), Some("SYNTAX"));
}

#[test]
fn resp_nested_arrays_and_hostile_lengths() {
    let mut deep = Vec::new();
    for _ in 0..MAX_DEPTH {
        deep.extend_from_slice(b"*1\r\n");
    }
    deep.extend_from_slice(b":1\r\n");
    assert_eq!(classes(&Framed::Resp, &deep).len(), 1);
    deep.splice(0..0, b"*1\r\n".iter().copied());
    assert!(
        parse_cut(&Framed::Resp, &deep, &[])
            .unwrap_err()
            .contains("nested")
    );
    for hostile in [
        &b"$9223372036854775807\r\n"[..],
        b"$536870913\r\n",
        b"*4000000000\r\n",
        b"$-2\r\n",
        b"*-5\r\n",
        b"$99999999999999999999999\r\n",
        b"$3\r\nabcdef\r\n",
        b"?what\r\n",
        b"+no line feed\rX\n",
    ] {
        let mut parser = Parser::new(Framed::Resp, LIMIT);
        let e = parser.feed(hostile, false).err();
        assert!(e.is_some(), "{:?}", String::from_utf8_lossy(hostile));
    }
    // A line that never ends is cut at MAX_LINE.
    let mut parser = Parser::new(Framed::Resp, LIMIT);
    let big = vec![b'+'; 4096];
    let mut failed = false;
    for _ in 0..(MAX_LINE / 4096 + 2) {
        if parser.feed(&big, false).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed);
    // A small limit is the limit.
    let mut parser = Parser::new(Framed::Resp, 10);
    assert!(parser.feed(b"$11\r\n", false).is_err());
    let mut parser = Parser::new(Framed::Resp, 10);
    assert!(parser.feed(b"*1\r\n+abcdefghij\r\n", false).is_err());
}

#[test]
fn memcache_replies() {
    let stream = b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\nEND\r\nVALUE a 1 2 99\r\nxy\r\nVALUE b 0 0\r\n\r\nEND\r\nNOT_FOUND\r\n12\r\nSERVER_ERROR out of memory\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\nDELETED\r\nSTAT pid 1\r\nSTAT x y\r\nEND\r\nVA 2 f\r\nhi\r\nEN\r\nHD\r\n";
    let got = classes(&Framed::Memcache, stream);
    let c: Vec<(Class, Option<&str>)> = got.iter().map(|(_, c, p)| (*c, p.as_deref())).collect();
    use Class::*;
    assert_eq!(
        c,
        [
            (Ok, None),
            (Ok, None),
            (Miss, None),
            (Ok, None),
            (Ok, None),
            (Ok, None),
            (Error, Some("SERVER_ERROR")),
            (Error, Some("CLIENT_ERROR")),
            (Error, Some("ERROR")),
            (Ok, None),
            (Ok, None),
            (Ok, None),
            (Miss, None),
            (Ok, None),
        ]
    );
    for hostile in [
        &b"VALUE k 0 99999999999\r\n"[..],
        b"VALUE k 0\r\n",
        b"VALUE k 0 2\r\nabc\r\n",
        b"VALUE k 0 1\r\na\r\nSTORED\r\n",
        b"HELLO\r\n",
    ] {
        let mut parser = Parser::new(Framed::Memcache, LIMIT);
        let mut rest = hostile;
        let failed = loop {
            match parser.feed(rest, false) {
                Err(_) => break true,
                Result::Ok(Step::Done(d)) => rest = &rest[d.used..],
                Result::Ok(Step::Need) => break false,
            }
        };
        assert!(failed, "{:?}", String::from_utf8_lossy(hostile));
    }
}

#[test]
fn http_responses() {
    let stream = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n\
HTTP/1.1 500 Internal\r\ncontent-length: 3\r\n\r\nbad\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n\
HTTP/1.1 304 Not Modified\r\n\r\n\
HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n\
HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
    let got = classes(&http(), stream);
    let c: Vec<(Class, Option<&str>)> = got.iter().map(|(_, c, p)| (*c, p.as_deref())).collect();
    use Class::*;
    assert_eq!(
        c,
        [
            (Ok, None),
            (Ok, None),
            (Error, Some("500")),
            (Ok, None),
            (Error, Some("304")),
            (Ok, None),
            (Error, Some("404")),
        ]
    );
    let closes: Vec<bool> = parse_cut(&http(), stream, &[])
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.close)
        .collect();
    assert_eq!(closes, [false, false, false, false, false, true, true]);
    // A HEAD response has no body whatever its length says.
    let mut parser = Parser::new(http(), LIMIT);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    assert!(
        matches!(parser.feed(head, true), Result::Ok(Step::Done(Done { used, .. })) if used == head.len())
    );
    // --ok-status 200-399.
    let mut parser = Parser::new(Framed::Http1 { ok: 200..=399 }, LIMIT);
    let moved = b"HTTP/1.1 301 Moved\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(
        parser.feed(moved, false),
        Result::Ok(Step::Done(Done {
            class: Class::Ok,
            ..
        }))
    ));
    for hostile in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
    ] {
        let mut parser = Parser::new(http(), LIMIT);
        assert!(
            parser.feed(hostile, false).is_err(),
            "{:?}",
            String::from_utf8_lossy(hostile)
        );
    }
}

/// One RESP value of depth at most `depth`, as bytes.
fn resp_value(depth: u32) -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[a-zA-Z ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[a-zA-Z ]{0,12}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            let mut v = format!("${}\r\n", b.len()).into_bytes();
            v.extend_from_slice(&b);
            v.extend_from_slice(b"\r\n");
            v
        }),
        Just(b"$-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
        Just(b"#f\r\n".to_vec()),
    ];
    leaf.prop_recursive(depth, 64, 5, |inner| {
        (
            prop_oneof![Just('*'), Just('~'), Just('>')],
            proptest::collection::vec(inner, 0..5),
        )
            .prop_map(|(kind, items)| {
                let mut v = format!("{kind}{}\r\n", items.len()).into_bytes();
                for item in items {
                    v.extend_from_slice(&item);
                }
                v
            })
    })
}

proptest! {
    #[test]
    fn resp_values_end_where_they_were_written(
        values in proptest::collection::vec(resp_value(4), 1..8),
        cuts in proptest::collection::vec(0usize..2000, 0..12),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for v in &values {
            stream.extend_from_slice(v);
            ends.push(stream.len());
        }
        let got = parse_cut(&Framed::Resp, &stream, &cuts).unwrap();
        let got_ends: Vec<usize> = got.iter().map(|(end, _)| *end).collect();
        prop_assert_eq!(got_ends, ends);
        for ((_, done), v) in got.iter().zip(&values) {
            let want = match v[0] {
                b'-' => Class::Error,
                b'_' => Class::Miss,
                b'$' if v.starts_with(b"$-1") => Class::Miss,
                _ => Class::Ok,
            };
            prop_assert_eq!(done.class, want);
        }
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for framed in [Framed::Resp, Framed::Memcache, http()] {
            let mut parser = Parser::new(framed, 1 << 16);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                match parser.feed(rest, false) {
                    Result::Ok(Step::Done(d)) => {
                        prop_assert!(d.used > 0 && d.used <= rest.len());
                        rest = &rest[d.used..];
                    }
                    _ => break,
                }
            }
        }
    }
}
