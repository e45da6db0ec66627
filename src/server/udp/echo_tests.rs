#![allow(unsafe_code)] // one setsockopt, UDP_SEGMENT on the test's client

use super::*;
use crate::server::udp::bind;
use std::time::Duration;

fn no_faults() -> crate::server::faults::Faults {
    crate::server::faults::Faults::new(1, &[])
}

fn options() -> UdpOptions {
    UdpOptions::default()
}

/// Serves `echoes` until `done` says so, 5 s at most.
fn serve_until(echoes: &mut [Echo], counts: &UdpCounts, done: impl Fn(&UdpCounts) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(counts) {
        assert!(Instant::now() < deadline, "not served in time");
        for echo in echoes.iter_mut() {
            echo.serve(counts, |_| true);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn out(counts: &UdpCounts) -> u64 {
    counts.datagrams_out.load(Ordering::Relaxed)
}

#[test]
fn every_worker_socket_shares_one_port_and_echoes() {
    let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    let port = sockets[0].local_addr().unwrap().port();
    assert!(
        sockets
            .iter()
            .all(|s| s.local_addr().unwrap().port() == port)
    );
    let counts = UdpCounts::default();
    let mut echoes: Vec<Echo> = sockets
        .into_iter()
        .map(|s| Echo::new(s, &options(), 3, &counts, no_faults()))
        .collect();
    let client = client();
    client.send_to(b"ping", ("127.0.0.1", port)).unwrap();
    // Whichever socket the kernel chose has it.
    serve_until(&mut echoes, &counts, |c| out(c) == 1);
    let mut buf = [0; 16];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.port()), (&b"ping"[..], port));
}

#[test]
fn a_datagram_longer_than_its_slot_is_echoed_cut_and_counted() {
    let socket = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0);
    let at = socket.local_addr().unwrap();
    let counts = UdpCounts::default();
    let mut echo = [Echo::with_slot(
        socket,
        &options(),
        1,
        &counts,
        no_faults(),
        1000,
    )];
    let client = client();
    let long: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    client.send_to(&long, at).unwrap();
    client.send_to(b"short", at).unwrap();
    serve_until(&mut echo, &counts, |c| out(c) == 2);
    let mut buf = [0; 2000];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &long[..1000]);
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"short");
    assert_eq!(counts.truncated.load(Ordering::Relaxed), 1);
}

#[cfg(target_os = "linux")]
#[test]
fn the_kernels_drops_of_a_full_receive_buffer_are_counted() {
    let socket = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0);
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(4096)
        .unwrap();
    let at = socket.local_addr().unwrap();
    let counts = UdpCounts::default();
    let mut echo = [Echo::new(socket, &options(), 1, &counts, no_faults())];
    let client = client();
    // Nobody reads while these arrive: a few fit, the rest are dropped by the kernel.
    for _ in 0..200 {
        client.send_to(&[7; 512], at).unwrap();
    }
    let got = |c: &UdpCounts| c.datagrams_in.load(Ordering::Relaxed);
    serve_until(&mut echo, &counts, |c| got(c) > 0);
    // The count comes with the next datagram read after the drops.
    client.send_to(b"after", at).unwrap();
    let before = got(&counts);
    serve_until(&mut echo, &counts, |c| got(c) > before);
    let drops = counts.kernel_drops();
    assert!(drops > 0, "no drops counted");
    assert_eq!(drops + got(&counts), 201);
}

#[cfg(target_os = "linux")]
#[test]
fn a_gro_run_is_echoed_one_datagram_each_and_stamped_in_order() {
    segments_echoed_one_by_one(UdpOptions {
        stamp: true,
        ..options()
    });
}

#[cfg(target_os = "linux")]
#[test]
fn with_gso_and_gro_off_the_same_datagrams_come_back_the_same() {
    segments_echoed_one_by_one(UdpOptions {
        stamp: true,
        gso: false,
        gro: false,
        ..options()
    });
}

#[cfg(target_os = "linux")]
fn segments_echoed_one_by_one(stamped: UdpOptions) {
    let socket = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0);
    let at = socket.local_addr().unwrap();
    let counts = UdpCounts::default();
    let mut echo = [Echo::new(socket, &stamped, 1, &counts, no_faults())];
    let client = client();
    // The client sends one 350-byte buffer which the kernel cuts into 100, 100, 100 and 50
    // (UDP_SEGMENT); over loopback, a GRO socket may get them as one run.
    let size: libc::c_int = 100;
    // SAFETY: a c_int option on the client's own socket.
    let r = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    let sent: Vec<u8> = (0..350u32).map(|i| (i % 200) as u8 + 1).collect();
    client.send_to(&sent, at).unwrap();
    serve_until(&mut echo, &counts, |c| out(c) == 4);
    let mut buf = [0; 1000];
    for (k, (start, len)) in [(0, 100), (100, 100), (200, 100), (300, 50)]
        .into_iter()
        .enumerate()
    {
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(n, len, "echo {k}");
        assert_eq!(&buf[..8], &(k as u64 + 1).to_be_bytes());
        assert_eq!(&buf[8..n], &sent[start + 8..start + len]);
    }
    assert_eq!(counts.datagrams_in.load(Ordering::Relaxed), 4);
}

#[cfg(target_os = "linux")]
#[test]
fn echoes_of_one_size_to_one_peer_leave_as_gso_and_arrive_as_datagrams() {
    let socket = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0);
    let at = socket.local_addr().unwrap();
    let counts = UdpCounts::default();
    let mut echo = [Echo::new(socket, &options(), 1, &counts, no_faults())];
    let client = client();
    for k in 0..10u8 {
        client.send_to(&[k; 64], at).unwrap();
    }
    client.send_to(&[99; 20], at).unwrap();
    serve_until(&mut echo, &counts, |c| out(c) == 11);
    let mut buf = [0; 1000];
    for k in 0..10u8 {
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[k; 64]);
    }
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[99; 20]);
}

#[test]
fn in_manual_mode_a_datagram_goes_to_the_console_and_is_not_echoed() {
    use crate::server::operator::output::Printer;
    use crate::server::session::registry::Registry;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&seen);
    let printer = Printer::new(move |line| sink.lock().push(line.to_owned()));
    let desk = Arc::new(super::super::manual::Desk::new(
        8,
        printer.clone(),
        Registry::new(1024),
    ));
    let socket = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0);
    let at = socket.local_addr().unwrap();
    desk.attach(vec![socket.try_clone().unwrap()]);
    let counts = UdpCounts::default();
    let mut echoes =
        [Echo::new(socket, &options(), 1, &counts, no_faults()).with_desk(Arc::clone(&desk), 0)];
    let client = client();
    client.send_to(b"hello desk\r\n", at).unwrap();
    serve_until(&mut echoes, &counts, |c| {
        c.datagrams_in.load(Ordering::Relaxed) == 1
    });
    assert!(printer.flush_timeout(Duration::from_secs(5)));
    let from = client.local_addr().unwrap();
    assert_eq!(
        *seen.lock(),
        [
            format!("* udp#1 is {from} (answer with @u1 text)"),
            "udp#1>> hello desk".to_owned()
        ]
    );
    assert_eq!(out(&counts), 0, "manual mode echoes nothing");
    assert_eq!(desk.last_speaker(), Some(1));
    desk.reply(1, "hi").unwrap();
    let mut buf = [0; 16];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hi\r\n", "the first datagram back is the reply");
    assert!(desk.forget(1));
    assert!(matches!(
        desk.reply(1, "again"),
        Err(super::super::manual::ReplyError::Gone)
    ));
}
