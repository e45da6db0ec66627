//! The command line: addresses, the duration and size grammar, exit codes, and what `--help`
//! promises.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use tcpool::Config;

use crate::support::*;

fn tcpool(args: &[&str]) -> Output {
    Command::new(tcpool_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `printf 'ping\n' | tcpool talk ADDR` and returns what it printed.
fn talk_ping(addr: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'ping\\n' | '{}' talk '{addr}' --reply-timeout 5s --connect-timeout 5s",
            tcpool_bin()
        ))
        .output()
        .unwrap()
}

fn assert_usage_error(args: &[&str], message: &str) {
    let out = tcpool(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

#[test]
fn talk_takes_a_bare_port_as_loopback() {
    let server = TestServer::start(Config::default());
    let out = talk_ping(&server.addr.port().to_string());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "server>> ping\n");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn talk_takes_a_name_and_a_bracketed_ipv6_address() {
    let server = TestServer::start(Config::default());
    let out = talk_ping(&format!("localhost:{}", server.addr.port()));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "server>> ping\n");

    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: the bracketed form is covered by the parser's tests");
        return;
    }
    let mut v6 = Binary::serve(&["--bind", "::1"]);
    let out = talk_ping(&format!("[::1]:{}", v6.addr.port()));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "server>> ping\n");
    v6.type_line("quit");
    assert_eq!(v6.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn talk_refuses_a_malformed_address_as_a_usage_error() {
    assert_usage_error(&["talk", "localhost:http"], "the port is not a number");
    assert_usage_error(&["talk", "0"], "port 0");
    assert_usage_error(&["talk", "::1:8900:"], "[ADDRESS]:PORT");
}

#[test]
fn talk_names_every_address_it_tried() {
    let port = free_port();
    let out = tcpool(&["talk", &format!("localhost:{port}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to localhost:{port}: 127.0.0.1:{port}: "
        )),
        "{stderr}"
    );
}

#[test]
fn durations_and_sizes_take_units_on_every_serve_and_talk_flag() {
    let mut server = Binary::serve(&[
        "--idle-timeout",
        "5m",
        "--shutdown-timeout",
        "1500ms",
        "--max-line",
        "1KiB",
        "--outbox-limit",
        "4KB",
    ]);
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));

    let server = TestServer::start(Config::default());
    let out = talk_ping(&server.addr.to_string());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "server>> ping\n");
}

#[test]
fn short_p_is_the_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    // The taken port proves `-p` reached the bind.
    assert_serve_refuses(
        &["-p", &port],
        &format!("cannot listen on 127.0.0.1:{port}"),
    );
}

#[test]
fn absurd_or_malformed_values_exit_2() {
    for (args, message) in [
        (&["serve", "--idle-timeout", "1e19"][..], "limit of 8760h"),
        (&["serve", "--idle-timeout", "NaN"], "finite"),
        (&["serve", "--idle-timeout=-1"], "negative"),
        (&["serve", "--idle-timeout", "-1"], "it is negative"),
        (&["serve", "--max-line", "-1KiB"], "it is negative"),
        (&["talk", "--reply-timeout", "-5s"], "it is negative"),
        (
            &["bench", "--start-at", "-5", "127.0.0.1:1"],
            "it is negative",
        ),
        (
            &["bench", "--start-at", "+-5", "127.0.0.1:1"],
            "it is negative",
        ),
        (
            &["serve", "--idle-timeout", "--port"],
            "\"--port\" is not a duration",
        ),
        (
            &["serve", "--shutdown-timeout", "10 parsecs"],
            "unknown unit",
        ),
        (&["serve", "--max-line", "0"], "at least 1 byte"),
        (&["serve", "--max-line", "8GiB"], "is more than"),
        (
            &["serve", "--max-line", "3GiB"],
            "is more than 2147483583 bytes",
        ),
        (
            &["serve", "--max-line", "2147483584"],
            "is more than 2147483583 bytes",
        ),
        (
            &["serve", "--outbox-limit", "1.5B"],
            "whole number of bytes",
        ),
        (&["talk", "--reply-timeout", "0"], "more than 0"),
        (&["talk", "--connect-timeout", "2y"], "unknown unit"),
        (
            &["bench", "--rate", "1e-300", "127.0.0.1:1"],
            "below 0.001 per second",
        ),
        (
            &["bench", "--connect-rate", "0.0001", "127.0.0.1:1"],
            "below 0.001 per second",
        ),
    ] {
        assert_usage_error(args, message);
    }
}

#[test]
fn the_longest_max_line_has_a_valid_outbox_limit() {
    // 2 × (2147483583 + 64) = 4294967294: a valid --outbox-limit exists for the longest line.
    let out = tcpool(&[
        "serve",
        "--port",
        "0",
        "--max-line",
        "2147483583",
        "--outbox-limit",
        "4294967294",
        "--help",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let config = Config {
        max_line: 2_147_483_583,
        outbox_limit: 4_294_967_294,
        ..Config::default()
    };
    assert!(config.validate().is_ok());
}

#[test]
fn values_checked_together_exit_2_like_bad_values() {
    // Checked after parsing, before binding: a usage error, not a failure to start.
    assert_usage_error(
        &["serve", "--port", "0", "--outbox-limit", "10"],
        "--outbox-limit 10 is too small for --max-line 65536",
    );
    assert_usage_error(
        &[
            "bench",
            "-s",
            "1",
            "--eol",
            "crlf",
            "-n",
            "1",
            "127.0.0.1:1",
        ],
        "invalid options",
    );
}

#[test]
fn values_checked_together_show_the_subcommands_usage() {
    for (args, usage) in [
        (
            &["serve", "--port", "0", "--outbox-limit", "10"][..],
            "Usage: tcpool serve",
        ),
        (
            &["bench", "--send", "x\\q", "127.0.0.1:1"][..],
            "Usage: tcpool bench",
        ),
        (
            &["bench", "--send", "x", "127.0.0.1:1"][..],
            "Usage: tcpool bench",
        ),
    ] {
        let out = tcpool(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(usage), "{args:?}: {stderr}");
    }
}

#[test]
fn sizes_and_inputs_are_bounded() {
    for size in ["-s", "--reply-size"] {
        let mut args = vec!["bench", size, "1024GiB", "127.0.0.1:1"];
        if size == "--reply-size" {
            args.splice(1..1, ["--send", "x"]);
        }
        assert_usage_error(&args, "the largest message");
    }
    // An endless input is refused once it passes the cap, not read until memory runs out.
    for args in [
        &["bench", "merge", "/dev/zero"][..],
        &[
            "bench",
            "--send-file",
            "/dev/zero",
            "--reply-size",
            "1",
            "127.0.0.1:1",
        ][..],
    ] {
        let mut command = Command::new(tcpool_bin());
        command.args(args).stdin(Stdio::null());
        let done = run_to_end(command, std::time::Duration::from_secs(60));
        let stderr = done.stderr.join("\n");
        assert!(matches!(done.code, Some(1 | 2)), "{args:?}: {stderr}");
        assert!(stderr.contains("larger than 64MiB"), "{args:?}: {stderr}");
        assert!(stderr.contains("/dev/zero"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_report_that_cannot_be_written_is_exit_1() {
    let server = TestServer::start(Config::default());
    let target = server.addr.to_string();
    for json in [false, true] {
        let mut args = vec!["bench", "-n", "4", "-c", "1", "--timeout", "5s", &target];
        if json {
            args.insert(1, "--json");
        }
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(tcpool_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write the report"),
            "{args:?}: {stderr}"
        );
    }
}

/// The paragraph of `flag` in `tcpool COMMAND --help`, on one line.
fn help_of(command: &str, flag: &str) -> String {
    let out = tcpool(&[command, "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(flag));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{flag} is not in {help}"));
    let rest = lines.take_while(|l| !l.trim_start().starts_with('-'));
    std::iter::once(first)
        .chain(rest)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn idle_timeout_help_says_either_way_and_a_reader_that_only_receives_is_not_idle() {
    let help = help_of("serve", "--idle-timeout");
    assert!(help.contains("no byte moved either way"), "{help}");
    let server = TestServer::start(Config {
        mode: tcpool::Mode::Chat,
        idle_timeout: Some(std::time::Duration::from_millis(1500)),
        ..Config::default()
    });
    let mut listener = chatter(server.addr);
    let mut talker = chatter(server.addr);
    expect_bytes(&mut listener, b"* #2 joined\n");
    // The listener never sends; it only receives, for well past the idle timeout. A line
    // every 250 ms leaves a loaded machine over a second of slack before either is idle.
    for i in 0..16 {
        let line = format!("line {i}\n");
        talker.write_all(line.as_bytes()).unwrap();
        expect_bytes(&mut listener, format!("<#2> {line}").as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(server.registry.len(), 2);
}

#[test]
fn talk_help_names_the_address_forms_it_takes() {
    let help = help_of("talk", "[HOST:PORT]");
    for form in ["PORT (on 127.0.0.1)", "HOST:PORT", "[IPv6]:PORT"] {
        assert!(help.contains(form), "{form}: {help}");
    }
    // Each form is exercised above: a bare port, localhost:PORT, [::1]:PORT.
    assert!(help_of("talk", "--no-wait").contains("quiet for half a second"));
    assert!(help_of("serve", "-p, --port").contains("0 picks a free one"));
}

/// A loopback listener whose accept queue is full: a further connect gets no answer (the
/// kernel drops its SYN) until the client gives up. Returns it and the connects that fill it.
fn unanswering_listener() -> (socket2::Socket, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let fillers = (0..4)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr);
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    (listener, fillers)
}

#[test]
fn connect_timeout_bounds_a_connect_that_gets_no_answer() {
    let (listener, _fillers) = unanswering_listener();
    let addr = listener
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .to_string();
    // Without the bound, the kernel's SYN retries take minutes; each run is killed at 30 s.
    let limit = std::time::Duration::from_secs(30);
    let mut talk = Command::new(tcpool_bin());
    talk.args(["talk", &addr, "--connect-timeout", "1s"])
        .stdin(Stdio::null());
    let talked = run_to_end(talk, limit);
    assert_eq!(talked.code, Some(1), "{:?}", talked.stderr);
    assert!(
        talked
            .stderr
            .iter()
            .any(|l| l.contains("no answer within 1s")),
        "{:?}",
        talked.stderr
    );
    let mut bench = Command::new(tcpool_bin());
    bench.args([
        "bench",
        &addr,
        "-c",
        "2",
        "-n",
        "2",
        "--connect-timeout",
        "1s",
    ]);
    let benched = run_to_end(bench, limit);
    assert_eq!(benched.code, Some(1), "{:?}", benched.stdout);
    assert!(
        benched
            .stdout
            .iter()
            .any(|l| l.contains("connect_timeout 2")),
        "{:?}",
        benched.stdout
    );
}

#[test]
fn log_level_turns_on_debug_lines_over_rust_log() {
    // The helper sets RUST_LOG=info: the flag wins, and each session's debug line appears.
    let mut server = Binary::serve(&["--log-level", "debug"]);
    let mut client = connect(server.addr);
    assert_eq!(round_trip(&mut client, b"ping\n"), b"ping\n");
    let line = server.wait_stderr("a debug line", |l| {
        l.contains(" DEBUG ") && l.contains("session 1 opened")
    });
    assert!(line.contains("tcpool::server::worker"), "{line}");
    drop(client);
    server.type_line("quit");
    assert_eq!(server.wait_timeout(IO_TIMEOUT), Some(0));
}

#[test]
fn log_level_is_global_and_wins_over_rust_log_either_way() {
    // A bench that cannot connect logs why at debug level, and exits 1.
    let target = format!("127.0.0.1:{}", free_port());
    let bench = |env: Option<&str>, args: &[&str]| {
        let mut command = Command::new(tcpool_bin());
        command
            .args(args)
            .env_remove("RUST_LOG")
            .env("RUST_LOG_STYLE", "never")
            .stdin(Stdio::null());
        if let Some(filter) = env {
            command.env("RUST_LOG", filter);
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let run = [
        "bench",
        "-c",
        "1",
        "-n",
        "1",
        "--connect-timeout",
        "5s",
        &target,
    ];
    let with = |level: &'static str| [&run[..], &["--log-level", level]].concat();
    let debug = "cannot connect: addr=";
    assert!(!bench(None, &run).contains(debug));
    assert!(bench(Some("debug"), &run).contains(debug));
    assert!(bench(None, &with("debug")).contains(debug));
    assert!(!bench(Some("debug"), &with("warn")).contains(debug));
    // Before the subcommand too, and as a full filter naming one module.
    let before = [
        &["--log-level", "warn,tcpool::client::bench::worker=debug"][..],
        &run,
    ]
    .concat();
    let stderr = bench(None, &before);
    assert!(stderr.contains(debug), "{stderr}");
    assert!(!stderr.contains("bench starting"), "{stderr}");
}

#[test]
fn a_bad_log_level_exits_2() {
    for (value, message) in [
        ("loud", "\"loud\" is not a level"),
        ("", "names no level"),
        ("tcpool=loud", "invalid logging spec"),
        ("=debug", "names no target"),
        ("info/(", "invalid regex"),
    ] {
        assert_usage_error(&["serve", "--log-level", value], message);
        assert_usage_error(&["--log-level", value, "talk"], message);
    }
}

/// A fresh directory for one test's files, under the system's temporary directory.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tcpool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn completions_print_a_script_for_each_shell() {
    let dir = scratch_dir("completions");
    let out = tcpool(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let script = dir.join("tcpool.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(checked.status.success(), "bash -n: {checked:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("complete -F _tcpool") || text.contains("-F _tcpool"),
        "{text}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = tcpool(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("tcpool"), "{shell}: {text}");
        // Every command is offered.
        for command in ["serve", "talk", "bench", "merge"] {
            assert!(text.contains(command), "{shell} misses {command}");
        }
    }
    assert_usage_error(&["completions", "ksh"], "invalid value 'ksh'");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `man -l FILE`'s text, with any overstrike formatting taken out; `man` must succeed and
/// say nothing on stderr.
fn man_renders(file: &std::path::Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(file)
        // Wide lines, so that no flag is broken at a hyphen.
        .env("MANWIDTH", "1000")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l {}: {stderr}", file.display());
    assert!(stderr.is_empty(), "man -l {}: {stderr}", file.display());
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn man_writes_a_page_per_command_and_man_renders_each() {
    let dir = scratch_dir("man");
    let out = tcpool(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    let pages = [
        ("tcpool", "--log-level"),
        ("tcpool-serve", "--max-conns"),
        ("tcpool-talk", "--no-wait"),
        ("tcpool-bench", "--connections"),
        ("tcpool-bench-merge", "--json"),
        ("tcpool-bench-plot", "--output"),
        ("tcpool-bench-agent", "--allow-target"),
        ("tcpool-tls", "gen"),
        ("tcpool-tls-gen", "DIR"),
        ("tcpool-completions", "--log-level"),
        ("tcpool-man", "--dir"),
    ];
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = pages.iter().map(|(p, _)| format!("{p}.1")).collect();
    expected.sort();
    assert_eq!(files, expected);
    for (page, flag) in pages {
        let file = dir.join(format!("{page}.1"));
        assert!(listed.contains(&file.display().to_string()), "{listed}");
        let text = man_renders(&file);
        assert!(text.contains(page), "{page}: {text}");
        assert!(text.contains(flag), "{page} lacks {flag}: {text}");
        assert!(text.contains("EXAMPLES"), "{page}: {text}");
    }
    // Without --dir, one page on stdout: the same as its file.
    let out = tcpool(&["man", "bench", "merge"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let written = std::fs::read(dir.join("tcpool-bench-merge.1")).unwrap();
    assert_eq!(out.stdout, written);
    assert_eq!(
        tcpool(&["man"]).stdout,
        std::fs::read(dir.join("tcpool.1")).unwrap()
    );
    assert_usage_error(
        &["man", "bench", "nope"],
        "tcpool bench has no command \"nope\"",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_commands_help_ends_with_examples() {
    for command in [
        &[][..],
        &["serve"],
        &["talk"],
        &["bench"],
        &["bench", "merge"],
        &["bench", "plot"],
        &["completions"],
        &["man"],
    ] {
        for help in ["--help", "-h"] {
            let out = tcpool(&[command, &[help]].concat());
            assert_eq!(out.status.code(), Some(0), "{command:?} {help}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            let examples = text
                .rfind("\nExamples:\n")
                .unwrap_or_else(|| panic!("{command:?} {help}: {text}"));
            let lines: Vec<&str> = text[examples..].lines().map(str::trim).collect();
            let comments = lines.iter().filter(|l| l.starts_with("# ")).count();
            let commands = lines
                .iter()
                .filter(|l| !l.starts_with('#') && l.contains("tcpool "))
                .count();
            assert!(comments >= 3, "{command:?} {help}: {text}");
            assert!(commands >= 3, "{command:?} {help}: {text}");
        }
    }
    // And each documents where its durations and sizes come from.
    let bench = String::from_utf8_lossy(&tcpool(&["bench", "--help"]).stdout).into_owned();
    assert!(
        bench.contains("(such as 250ms, 5s, 2m; bare = seconds)"),
        "{bench}"
    );
}
