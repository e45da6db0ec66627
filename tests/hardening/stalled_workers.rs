//! `--overflow reject` with stalled workers answers `busy` instead of queueing for ever.

use super::*;

/// Echoes every message; on `stall` it blocks its worker until the gate opens (at most
/// `IO_TIMEOUT`).
struct Stall {
    entered: Arc<AtomicUsize>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Handler for Stall {
    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        if message.text == b"stall" {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let (open, opened) = &*self.gate;
            let guard = open.lock().unwrap();
            let _unused = opened
                .wait_timeout_while(guard, IO_TIMEOUT, |open| !*open)
                .unwrap();
        }
        ctx.send(message.raw);
    }
}

/// Opens the gate when dropped, so a failing test does not leave workers stalled.
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

#[test]
fn overflow_reject_answers_busy_when_stalled_workers_fill_the_backlog() {
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let server = TestServer::with_handler(
        Config {
            workers: 2,
            backlog: 2,
            overflow: Overflow::Reject,
            ..Config::default()
        },
        Stall {
            entered: entered.clone(),
            gate: gate.clone(),
        },
    );
    let gate = Gate(gate);
    // Two clients stall both workers.
    let mut stallers = Vec::new();
    for n in 1..=2 {
        let mut c = connect(server.addr);
        c.write_all(b"stall\n").unwrap();
        wait_until("a worker to stall", || entered.load(Ordering::SeqCst) == n);
        stallers.push(c);
    }
    // Two more fill the backlog: accepted, registered, not adopted.
    let mut queued: Vec<TcpStream> = (0..2).map(|_| connect(server.addr)).collect();
    server.wait_for("a full backlog", |r| r.stats().backlog == 2);
    // The next one is told `busy` and closed.
    let mut extra = connect(server.addr);
    assert_eq!(
        read_line(&mut extra),
        b"busy: server full, try again later\n"
    );
    assert_eq!(read_to_close(&mut extra), b"");
    assert_eq!(server.registry.stats().rejected, 1);
    assert_eq!(server.registry.len(), 4);

    // Unstalled, everyone is served: the stallers, the queued, and newcomers.
    gate.open();
    for c in &mut stallers {
        assert_eq!(read_n(c, 6), b"stall\n");
    }
    for (i, c) in queued.iter_mut().enumerate() {
        let msg = format!("queued {i}\n");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    let mut newcomer = connect(server.addr);
    assert_eq!(round_trip(&mut newcomer, b"welcome\n"), b"welcome\n");
    assert_eq!(server.registry.stats().rejected, 1);
}
