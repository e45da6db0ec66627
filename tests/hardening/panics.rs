//! A panicking handler ends only its own session, with an error log line.

use super::*;

/// Echoes every message; panics on the message `boom`.
struct Fuse;

impl Handler for Fuse {
    fn holds_partial_lines(&self) -> bool {
        false
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        if message.complete && message.text == b"boom" {
            panic!("boom on purpose");
        }
        ctx.send(message.raw);
    }
}

/// Set in the child process that runs the panic scenario, so its log can be read.
const PANIC_CHILD: &str = "TCPOOL_HARDENING_PANIC_CHILD";

#[test]
fn handler_panic_kills_only_that_session_with_an_error_log_line() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        return handler_panic_scenario();
    }
    // The server's log is this process's global logger: run the scenario in a child test
    // process whose stderr can be read.
    let name = "hardening::panics::handler_panic_kills_only_that_session_with_an_error_log_line";
    let mut scenario = Command::new(std::env::current_exe().unwrap());
    scenario
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(PANIC_CHILD, "1")
        .env("RUST_LOG", "error")
        .env("RUST_LOG_STYLE", "never");
    let Finished {
        code,
        stdout,
        stderr,
    } = run_to_end(scenario, Duration::from_secs(60));
    let output = [stdout, stderr].concat();
    assert_eq!(code, Some(0), "the scenario failed: {output:#?}");
    assert!(
        output.iter().any(|l| l.contains("1 passed")),
        "the scenario did not run: {output:#?}"
    );
    let errors: Vec<&String> = output
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("handler panicked"))
        .collect();
    assert_eq!(errors.len(), 3, "{output:#?}");
    for line in errors {
        assert!(
            line.contains("peer=127.0.0.1:") && line.contains("panic=boom on purpose"),
            "{line}"
        );
    }
}

fn handler_panic_scenario() {
    // One worker: the panics happen on the thread that serves everyone.
    let server = TestServer::with_handler(
        Config {
            workers: 1,
            ..Config::default()
        },
        Fuse,
    );
    let mut bystanders: Vec<TcpStream> = (0..5).map(|_| connect(server.addr)).collect();
    for (i, c) in bystanders.iter_mut().enumerate() {
        let msg = format!("before {i}\n");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    // Line-based victims, one panicking after a reply in the same read, and a seed-style one.
    let cases: [(&[u8], &[u8], &[u8]); 3] = [
        (b"ok\n", b"boom\n", b"quit\n"),
        (b"ok\n", b"first\nboom\nnever\n", b"quit\n"),
        (b"", b"boom", b"quit"),
    ];
    for (greeting, input, goodbye) in cases {
        let mut victim = connect(server.addr);
        if !greeting.is_empty() {
            assert_eq!(round_trip(&mut victim, greeting), greeting);
        }
        victim.write_all(input).unwrap();
        let got = read_to_close(&mut victim);
        // Told `quit`; replies to the read that panicked may be lost, never garbled.
        let before = got
            .strip_suffix(goodbye)
            .unwrap_or_else(|| panic!("no quit: {:?}", String::from_utf8_lossy(&got)));
        assert!(b"first\n".starts_with(before), "{got:?}");
        // The worker lives on: every bystander is still answered, in the same session.
        for (i, c) in bystanders.iter_mut().enumerate() {
            let msg = format!("after {i}\n");
            assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
        }
    }
    server.wait_for("only the bystanders left", |r| r.len() == 5);
    let mut newcomer = connect(server.addr);
    assert_eq!(round_trip(&mut newcomer, b"new\n"), b"new\n");
    let summary = server.stop();
    assert_eq!(summary.sessions, 9);
}
