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
fn templates_read_escapes_and_placeholders() {
    let t = Template::parse(r"a\r\n\t\\\x00\xFF{conn}-{seq}{x}").unwrap();
    let mut out = Vec::new();
    t.render(12, 345, &mut out);
    assert_eq!(out, b"a\r\n\t\\\x00\xff12-345{x}");
    assert_eq!(t.to_string(), r"a\r\n\t\\\x00\xff{conn}-{seq}{x}");
    for bad in [r"\q", r"\x4", r"\xZZ", "end\\"] {
        assert!(Template::parse(bad).is_err(), "{bad}");
    }
    assert!(Template::parse("").unwrap().is_empty());
    assert!(!Template::parse("{seq}").unwrap().is_empty());
    let mut raw = Vec::new();
    Template::raw(b"{conn}\\n".to_vec()).render(1, 1, &mut raw);
    assert_eq!(raw, b"{conn}\\n");
}

#[test]
fn key_spaces_draw_from_their_range_repeatably() {
    let t = Template::parse("GET k:{key:10} {rand:12} z{key:1000:zipf=0.99}").unwrap();
    assert!(t.draws());
    assert_eq!(
        t.to_string(),
        "GET k:{key:10} {rand:12} z{key:1000:zipf=0.99}"
    );
    let render = |seed| {
        let mut draw = Draw::new(seed, 3);
        let mut out = Vec::new();
        for seq in 0..100 {
            t.render_drawn(3, seq, &mut draw, &mut out);
            out.push(b'|');
        }
        out
    };
    assert_eq!(render(7), render(7));
    assert_ne!(render(7), render(8));
    for bad in [
        "{key:0}",
        "{key:x}",
        "{key:5:zipf=-1}",
        "{key:5:zpf=1}",
        "{rand:0}",
        "{rand:}",
        "{key:5",
    ] {
        assert!(Template::parse(bad).is_err(), "{bad}");
    }
    // Uniform: every key of 0..10 comes, and none outside.
    let mut draw = Draw::new(1, 0);
    let mut seen = [0u32; 10];
    for _ in 0..10_000 {
        seen[draw.below(10) as usize] += 1;
    }
    assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    // Zipf 0.99 over 1000 keys: key 0 about 1/H(1000) = 13 % of draws, key 1 half that.
    let mut zipf = vec![0u32; 1000];
    for _ in 0..100_000 {
        zipf[draw.zipf(1000, 0.99) as usize] += 1;
    }
    assert!((11_000..16_000).contains(&zipf[0]), "{}", zipf[0]);
    let ratio = f64::from(zipf[0]) / f64::from(zipf[1]);
    assert!((1.7..2.3).contains(&ratio), "{ratio}");
    assert_eq!(draw.zipf(1, 0.99), 0);
    let weights = [9, 1];
    let gets = (0..10_000).filter(|_| draw.pick(&weights, 10) == 0).count();
    assert!((8_700..9_300).contains(&gets), "{gets}");
}

#[test]
fn delimiter_is_found_across_reads() {
    let d = Delimiter::new(b"\r\n");
    let mut m = 0;
    assert_eq!(d.find(b"+PONG\r", &mut m), None);
    assert_eq!(m, 1);
    assert_eq!(d.find(b"\n+PO", &mut m), Some(1));
    assert_eq!(m, 0);
    // Overlapping prefixes: "aab" inside "aaab".
    let d = Delimiter::new(b"aab");
    let mut m = 0;
    assert_eq!(d.find(b"aa", &mut m), None);
    assert_eq!(d.find(b"ab", &mut m), Some(2));
    let d = Delimiter::new(b"END\r\n");
    let mut m = 0;
    assert_eq!(d.find(b"VALUE k 0 1\r\nv\r\nEN", &mut m), None);
    assert_eq!(d.find(b"D\r\nx", &mut m), Some(3));
}
