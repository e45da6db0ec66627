//! Limits are flags with defaults, documented, and each one holds.

use super::*;

#[test]
fn limits_are_flags_with_defaults_in_help_and_readme() {
    let out = Command::new(tcpool_bin())
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // The flags and their defaults are documented in the book's `tcpool serve` chapter.
    let chapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/serve.md");
    let documented = std::fs::read_to_string(&chapter).unwrap();
    for (flag, default) in [
        ("--idle-timeout", "0"),
        ("--max-line", "64KiB"),
        ("--outbox-limit", "1MiB"),
        ("--max-conns", "10000"),
    ] {
        // The flag's paragraph in `--help` runs up to the next flag.
        let paragraph: String = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .take_while({
                let mut first = true;
                move |l| std::mem::take(&mut first) || !l.trim_start().starts_with('-')
            })
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            paragraph.contains(&format!("default: {default}")),
            "`serve --help` shows no default {default} for {flag}: {paragraph:?}"
        );
        assert!(
            documented
                .lines()
                .any(|l| l.contains(&format!("`{flag}")) && l.contains(&format!("`{default}`"))),
            "{} documents no default `{default}` for {flag}",
            chapter.display()
        );
    }
}

#[test]
fn max_line_cuts_a_long_line_into_messages() {
    const MAX_LINE: usize = 1000;
    let server = launch(serve_command(&[
        "--mode",
        "chat",
        "--max-line",
        &MAX_LINE.to_string(),
    ]));
    let mut listener = chatter(server.addr);
    assert_eq!(nick(&mut listener, "ear"), b"* you are now ear\n");
    let mut talker = chatter(server.addr);
    assert_eq!(read_line(&mut listener), b"* #2 joined\n");
    talker.write_all(b"line-based from here\n").unwrap();
    assert_eq!(read_line(&mut listener), b"<#2> line-based from here\n");

    // 20,000 bytes and no newline: relayed in pieces of at most --max-line while it arrives.
    let long: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for piece in long.chunks(1500) {
        talker.write_all(piece).unwrap();
    }
    let mut relayed = Vec::new();
    let mut pieces = 0;
    while relayed.len() < long.len() - (MAX_LINE + 1) {
        let line = read_line(&mut listener);
        let text = line
            .strip_prefix(b"<#2> ")
            .and_then(|l| l.strip_suffix(b"\n"))
            .unwrap_or_else(|| panic!("not a relayed piece: {:?}", String::from_utf8_lossy(&line)));
        assert!(text.len() <= MAX_LINE, "a piece of {} bytes", text.len());
        relayed.extend_from_slice(text);
        pieces += 1;
    }
    assert!(pieces >= 18, "{pieces} pieces");
    // The newline releases the rest; nothing was lost or reordered.
    talker.write_all(b"\n").unwrap();
    while relayed.len() < long.len() {
        let line = read_line(&mut listener);
        let text = &line[b"<#2> ".len()..line.len() - 1];
        assert!(text.len() <= MAX_LINE);
        relayed.extend_from_slice(text);
    }
    assert_eq!(relayed, long);
}

#[test]
fn outbox_limit_drops_a_reader_that_falls_behind_with_a_warning_naming_it() {
    let server = launch(serve_command(&[
        "--mode",
        "chat",
        "--outbox-limit",
        "262144",
        "--workers",
        "2",
    ]));
    // The laggard reads nothing, through a small receive buffer.
    let laggard = {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        TcpStream::from(socket)
    };
    let laggard_port = laggard.local_addr().unwrap().port();
    let mut watcher = chatter(server.addr);
    let mut talker = chatter(server.addr);
    // Both earlier clients hear of the talker: everyone is in the room.
    assert_eq!(read_line(&mut watcher), b"* #3 joined\n");

    // The watcher reads everything. The talker never gets more than 128 lines (about 128 KiB)
    // ahead of it, so the watcher never has more than that plus one read's worth (64 KiB)
    // queued, well under the limit, however slowly its thread is scheduled.
    let line: Vec<u8> = [&[b'w'; 1023][..], b"\n"].concat();
    let relayed = b"<#3> ".len() + line.len();
    let lines = 16 * 1024; // 16 MiB: more than any socket buffers hold
    let read_so_far = Arc::new(AtomicUsize::new(0));
    let reading = {
        let read_so_far = read_so_far.clone();
        thread::spawn(move || {
            let mut reader = BufReader::with_capacity(64 * 1024, watcher);
            let (mut got, mut notices) = (0, Vec::new());
            let mut l = Vec::new();
            while got < lines * relayed {
                l.clear();
                let n = reader
                    .read_until(b'\n', &mut l)
                    .expect("the watcher is served");
                assert!(n > 0, "the watcher was closed after {got} bytes");
                if l.starts_with(b"* ") {
                    notices.push(String::from_utf8_lossy(&l).into_owned());
                    continue;
                }
                assert!(l.len() == relayed && l.starts_with(b"<#3> www"), "{l:?}");
                got += n;
                read_so_far.store(got, Ordering::Relaxed);
            }
            (got, notices, reader)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..lines {
        talker.write_all(&line).unwrap();
        while i >= read_so_far.load(Ordering::Relaxed) / relayed + 128 {
            assert!(Instant::now() < deadline, "the watcher fell behind");
            thread::sleep(Duration::from_millis(1));
        }
    }
    let (got, mut notices, mut watcher) = reading.join().unwrap();
    assert_eq!(got, lines * relayed);
    let warning = server.wait_stderr("the outbox-overflow warning", |l| {
        l.contains("reason=outbox-overflow")
    });
    // Everyone else heard that the laggard left (during the flood, or just now).
    if notices.is_empty() {
        let mut l = Vec::new();
        watcher.read_until(b'\n', &mut l).unwrap();
        notices.push(String::from_utf8_lossy(&l).into_owned());
    }
    assert_eq!(notices, ["* #1 left\n"]);
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains(&format!("peer=127.0.0.1:{laggard_port} ")),
        "the warning does not name the laggard (port {laggard_port}): {warning}"
    );
    assert!(warning.contains("limit=262144"), "{warning}");
    // The talker is still served.
    assert_eq!(
        nick(&mut talker, "still-here"),
        b"* you are now still-here\n"
    );
    drop(laggard);
}
