//! Output that cannot be written, and hostile control characters in what is logged.

use super::*;

#[test]
fn stdout_piped_into_head_and_a_closed_stderr_kill_nothing() {
    // Manual mode prints every client line on stdout; `head -n 1` closes it after one line.
    // Trace level, to see when the server has read a client's line.
    let mut head = Command::new("head")
        .args(["-n", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut command = serve_command(&["--mode", "manual", "--workers", "2"]);
    // The server writes straight into `head`, which holds the only read end of the pipe.
    command
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(head.stdin.take().unwrap()));
    let mut server = launch(command);
    let mut c = connect(server.addr);
    assert_eq!(wait_child(&mut head, IO_TIMEOUT), Some(0));
    // Every line printed from now on meets a closed pipe.
    for i in 0..50 {
        c.write_all(format!("hello {i}\n").as_bytes()).unwrap();
    }
    server.wait_stderr("the first client's lines", |l| l.contains("session 1 read"));
    server.type_line("/list");
    server.type_line("/stats");
    server.type_line("/help");
    server.type_line("first reply");
    assert_eq!(read_line(&mut c), b"first reply\n");
    let mut other = connect(server.addr);
    other.write_all(b"me too\n").unwrap();
    // Once read, the second client is line-based and is answered with `\n` too.
    server.wait_stderr("the second client's line", |l| l.contains("session 2 read"));
    server.type_line("@all to everyone");
    assert_eq!(read_line(&mut c), b"to everyone\n");
    assert_eq!(read_line(&mut other), b"to everyone\n");
    assert_eq!(server.wait_timeout(Duration::ZERO), None, "the server died");
    // The shutdown summary goes to the closed stdout too.
    server.signal("TERM");
    assert_eq!(read_to_close(&mut c), b"quit\n");
    assert_eq!(server.wait_timeout(Duration::from_secs(5 + 2)), Some(0));
    let stderr = server.stderr_lines();
    assert!(
        !stderr.iter().any(|l| l.contains("panicked")),
        "{stderr:#?}"
    );

    // A closed stderr: every log line fails to be written, and the server serves on.
    let mut child = serve_command(&["--workers", "2"])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = {
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "no listening line"
            );
            if let Some(addr) = listening_addr(&line) {
                break addr;
            }
        }
        // Dropping the reader closes the pipe's only read end.
    };
    for i in 0..20 {
        let mut c = connect(addr);
        let msg = format!("unlogged {i}\n");
        assert_eq!(round_trip(&mut c, msg.as_bytes()), msg.as_bytes());
    }
    let mut last = connect(addr);
    assert_eq!(round_trip(&mut last, b"x"), b"x");
    assert_eq!(child.try_wait().unwrap(), None, "the server died");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(read_to_close(&mut last), b"quit");
    assert_eq!(wait_child(&mut child, Duration::from_secs(5 + 2)), Some(0));
}

/// Whether `text` holds a character that a terminal or log viewer acts on: C0 and C1
/// controls (other than the line break that ends each line), DEL, bidirectional overrides
/// and isolates, Unicode line separators.
fn has_raw_control(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
    })
}

#[test]
fn a_log_line_about_a_peer_never_contains_its_raw_control_characters() {
    // Trace level shows payloads; manual mode shows client lines on stdout.
    let mut child = serve_command(&["--mode", "manual", "--workers", "1"])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect_raw(child.stdout.take().unwrap());
    let stderr = collect_raw(child.stderr.take().unwrap());
    let deadline = Instant::now() + IO_TIMEOUT;
    let addr = loop {
        let text = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        if let Some(addr) = listening_addr(&text) {
            break addr;
        }
        assert!(Instant::now() < deadline, "no listening line: {text}");
        thread::sleep(Duration::from_millis(10));
    };
    let hostile: [&[u8]; 6] = [
        // Seed-style: clear screen, set the window title, bell, backspaces, NUL, DEL.
        b"\x1b[2J\x1b]0;owned\x07\x08\x08\x00\x7f",
        // Line-based from here: a fake log line after a bare \r, and one after a \n.
        b"\rERROR fake log line\n[2026-01-01T00:00:00Z ERROR tcpool] forged\n",
        // C1 controls (CSI as U+009B), bidi override, line separator, invalid UTF-8.
        "\u{9b}31mred \u{202e}desrever\u{2028}next\n".as_bytes(),
        b"\xff\xfe\x1b[0m\x1bc\n",
        // A long line full of escapes, longer than one trace excerpt.
        &[b'\x1b'; 600],
        b"\n",
    ];
    let mut c = connect(addr);
    for piece in hostile {
        c.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    let mut child_stdin = child.stdin.take().unwrap();
    writeln!(child_stdin, "/list").unwrap();
    let waited = Instant::now() + IO_TIMEOUT;
    while !String::from_utf8_lossy(&stdout.lock().unwrap()).contains("forged") {
        assert!(Instant::now() < waited, "the client lines were not shown");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(wait_child(&mut child, Duration::from_secs(5 + 2)), Some(0));
    drop(child_stdin);
    thread::sleep(Duration::from_millis(100)); // let the collectors finish

    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    let stdout = String::from_utf8_lossy(&stdout.lock().unwrap()).into_owned();
    // The payloads were logged (escaped), so the check below is about something.
    assert!(
        stderr.contains(r"\x1b[2J"),
        "no escaped payload in the trace log"
    );
    assert!(
        stdout.contains(r"\x1b[2J"),
        "no escaped client line on stdout"
    );
    for (name, text) in [("stderr", &stderr), ("stdout", &stdout)] {
        for line in text.lines() {
            assert!(
                !has_raw_control(line),
                "{name}: raw control characters in {line:?}"
            );
        }
    }
    // No forged line: every log line is the logger's own, starting with its timestamp.
    for line in stderr.lines() {
        assert!(
            line.starts_with('['),
            "a log line not made by the logger: {line:?}"
        );
    }
}

/// Collects a child's raw output on a background thread.
fn collect_raw(mut out: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = bytes.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    bytes
}
