use super::*;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A one-connection server running `serve` on a thread.
fn server(serve: impl FnOnce(TcpStream) + Send + 'static) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || serve(listener.accept().unwrap().0));
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn capture() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + 'static) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (lines, move |l: &str| {
        sink.lock().unwrap().push(l.to_owned())
    })
}

#[test]
fn waits_for_each_reply_and_stops_at_quit() {
    let stream = server(|mut s| {
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 || &buf[..n] == b"quit" {
                return;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let (printed, print) = capture();
    let input = io::Cursor::new("hello\nworld\nquit\nnever\n");
    let end = run_piped(stream, input, Options::default(), print, |w| panic!("{w}")).unwrap();
    assert_eq!(end, End::QuitSent);
    assert_eq!(
        *printed.lock().unwrap(),
        ["server>> hello", "server>> world"]
    );
}

#[test]
fn a_silent_server_gets_a_warning_not_a_hang() {
    let stream = server(|mut s| {
        let mut buf = [0u8; 64];
        while s.read(&mut buf).unwrap_or(0) > 0 {}
    });
    let (_, print) = capture();
    let warned = Mutex::new(Vec::new());
    let options = Options {
        reply_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    let started = Instant::now();
    let end = run_piped(stream, io::Cursor::new("a\nb\n"), options, print, |w| {
        warned.lock().unwrap().push(w.to_owned())
    })
    .unwrap();
    assert_eq!(end, End::InputEnded);
    assert_eq!(warned.lock().unwrap().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn server_quit_and_close_end_the_talk() {
    let stream = server(|mut s| s.write_all(b"bye\nquit\n").unwrap());
    let (printed, print) = capture();
    let input = io::Cursor::new("x\ny\n");
    let end = run_piped(stream, input, Options::default(), print, |_| {}).unwrap();
    assert_eq!(end, End::QuitReceived);
    assert_eq!(*printed.lock().unwrap(), ["server>> bye"]);

    let stream = server(drop);
    let (_, print) = capture();
    let options = Options {
        wait: true,
        ..Options::default()
    };
    let end = run_piped(stream, io::Cursor::new("x\n"), options, print, |_| {}).unwrap();
    assert_eq!(end, End::ServerClosed);
}

#[test]
fn no_wait_sends_everything_then_collects_what_is_due() {
    let stream = server(|mut s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"three\n") {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(&got).unwrap();
        thread::sleep(Duration::from_secs(10));
    });
    let (printed, print) = capture();
    let options = Options {
        eol: LineEnding::Lf,
        wait: false,
        reply_timeout: Duration::from_secs(5),
    };
    let end = run_piped(
        stream,
        io::Cursor::new("one\ntwo\nthree\n"),
        options,
        print,
        |w| panic!("{w}"),
    )
    .unwrap();
    assert_eq!(end, End::InputEnded);
    assert_eq!(
        *printed.lock().unwrap(),
        ["server>> one", "server>> two", "server>> three"]
    );
}

#[test]
fn peer_control_characters_are_shown_escaped() {
    let stream = server(|mut s| s.write_all(b"\x1b[2Jboom\n").unwrap());
    let (printed, print) = capture();
    run_piped(
        stream,
        io::Cursor::new("x\n"),
        Options::default(),
        print,
        |_| {},
    )
    .unwrap();
    assert_eq!(*printed.lock().unwrap(), [r"server>> \x1b[2Jboom"]);
}
