//! Datagrams read and sent in batches: `recvmmsg` and `sendmmsg` on Linux, one system call
//! for many datagrams, with their ancillary data ([`super::cmsg`]); elsewhere, one
//! `recv_from` or `send_to` a datagram.
//!
//! `std` and `socket2` have no `recvmmsg`/`sendmmsg`, so this file calls them itself.

#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

use super::cmsg::{Local, Meta};

/// Datagrams (or GRO-coalesced runs of them) read in one system call.
pub(crate) const SLOTS: usize = 32;

/// Each slot's room: the largest UDP payload over IPv6, and what GRO coalesces at most.
pub(crate) const SLOT: usize = u16::MAX as usize;

/// One received datagram (or a GRO run), in its slot of the [`Inbox`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub(crate) peer: SocketAddr,
    pub(crate) len: usize,
    /// It was longer than its slot, and arrived cut (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    pub(crate) meta: Meta,
}

/// The receive side: [`SLOTS`] buffers of [`SLOT`] bytes and what the last read put in them.
pub(crate) struct Inbox {
    buf: Box<[u8]>,
    slot: usize,
    pub(crate) got: Vec<Arrival>,
    #[cfg(target_os = "linux")]
    names: Box<[libc::sockaddr_storage]>,
    #[cfg(target_os = "linux")]
    controls: Box<[super::cmsg::Control]>,
}

impl Inbox {
    /// An inbox of slots of `slot` bytes (smaller in tests, to see truncation).
    pub(crate) fn new(slot: usize) -> Self {
        Inbox {
            buf: vec![0; SLOTS * slot].into_boxed_slice(),
            slot,
            got: Vec::with_capacity(SLOTS),
            // SAFETY: all zeros is a valid (empty) sockaddr_storage.
            #[cfg(target_os = "linux")]
            names: vec![unsafe { std::mem::zeroed() }; SLOTS].into_boxed_slice(),
            #[cfg(target_os = "linux")]
            controls: vec![[0; 16]; SLOTS].into_boxed_slice(),
        }
    }

    /// The bytes of the `i`th arrival of the last read.
    pub(crate) fn data_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.got[i].len;
        &mut self.buf[i * self.slot..i * self.slot + len]
    }

    /// Where the `i`th slot begins in [`Inbox::bytes`].
    pub(crate) fn offset(&self, i: usize) -> usize {
        i * self.slot
    }

    /// All the slots, for the replies that point into them.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Reads up to `max` datagrams (at most [`SLOTS`]) into [`Inbox::got`]; `WouldBlock`
    /// when none waits.
    #[cfg(target_os = "linux")]
    pub(crate) fn recv(&mut self, socket: &UdpSocket, max: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let n = max.clamp(1, SLOTS);
        // SAFETY: plain C structs, all zeros a valid start.
        let mut iovs: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: self.buf[i * self.slot..].as_mut_ptr().cast(),
                iov_len: self.slot,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of::<super::cmsg::Control>() as _;
        }
        // SAFETY: every header points into buffers that outlive the call, with their sizes.
        let r = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.got.clear();
        for h in &hdrs[..r as usize] {
            let peer = decode(&self.names[self.got.len()]);
            self.got.push(Arrival {
                // A datagram with no address (never over UDP) is answered nowhere: an
                // unspecified address on port 0, which the send refuses and counts.
                peer: peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                len: h.msg_len as usize,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                meta: super::cmsg::parse(&h.msg_hdr),
            });
        }
        Ok(self.got.len())
    }

    /// Reads one datagram into [`Inbox::got`]; `WouldBlock` when none waits.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn recv(&mut self, socket: &UdpSocket, _max: usize) -> io::Result<usize> {
        let (len, peer) = socket.recv_from(&mut self.buf[..self.slot])?;
        self.got.clear();
        self.got.push(Arrival {
            peer,
            len,
            truncated: false,
            meta: Meta::default(),
        });
        Ok(1)
    }
}

/// Where an echo's bytes are: `src` indexes the buffers given to [`send`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part {
    pub(crate) src: usize,
    pub(crate) at: usize,
    pub(crate) len: usize,
}

/// One message: `count` echoes from `first` on (in the parts given to [`send`]) to one peer
/// from one address; with `segment` > 0, one `UDP_SEGMENT` message the kernel cuts into
/// datagrams of that size, else a single echo.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg {
    pub(crate) peer: SocketAddr,
    pub(crate) local: Option<Local>,
    pub(crate) segment: u16,
    pub(crate) first: usize,
    pub(crate) count: usize,
}

/// Messages a `sendmmsg` carries at most, and their echoes at most.
#[cfg(target_os = "linux")]
const MSGS: usize = 64;
#[cfg(target_os = "linux")]
const IOVS: usize = 256;

/// Sends `msgs` in order. Returns how many went, and the error of the first that did not
/// (the caller decides whether to go on past it).
#[cfg(target_os = "linux")]
pub(crate) fn send(
    socket: &UdpSocket,
    msgs: &[Msg],
    parts: &[Part],
    data: &[&[u8]],
) -> (usize, Option<io::Error>) {
    use std::os::fd::AsRawFd;
    let mut sent = 0;
    while sent < msgs.len() {
        // SAFETY: plain C structs, all zeros a valid start.
        let mut hdrs: [libc::mmsghdr; MSGS] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; IOVS] = unsafe { std::mem::zeroed() };
        let mut names: [libc::sockaddr_storage; MSGS] = unsafe { std::mem::zeroed() };
        let mut controls = [[0u64; 16]; MSGS];
        let (mut n, mut iv) = (0, 0);
        for m in &msgs[sent..] {
            if n == MSGS || (iv + m.count > IOVS && n > 0) {
                break;
            }
            let count = m.count.min(IOVS);
            for (k, p) in parts[m.first..m.first + count].iter().enumerate() {
                let bytes = &data[p.src][p.at..p.at + p.len];
                iovs[iv + k] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
            }
            let h = &mut hdrs[n].msg_hdr;
            h.msg_namelen = encode(m.peer, &mut names[n]);
            h.msg_name = (&mut names[n] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut iovs[iv];
            h.msg_iovlen = count as _;
            super::cmsg::build(h, &mut controls[n], m.local, m.segment);
            n += 1;
            iv += count;
        }
        // SAFETY: every header points into the arrays above and `data`, alive for the call.
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as _,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (sent, Some(e));
        }
        sent += r as usize;
    }
    (sent, None)
}

/// Sends `msgs` in order, one `send_to` an echo.
#[cfg(not(target_os = "linux"))]
pub(crate) fn send(
    socket: &UdpSocket,
    msgs: &[Msg],
    parts: &[Part],
    data: &[&[u8]],
) -> (usize, Option<io::Error>) {
    for (i, m) in msgs.iter().enumerate() {
        for p in &parts[m.first..m.first + m.count] {
            if let Err(e) = socket.send_to(&data[p.src][p.at..p.at + p.len], m.peer) {
                return (i, Some(e));
            }
        }
    }
    (msgs.len(), None)
}

/// The address in a `sockaddr_storage` the kernel filled.
#[cfg(target_os = "linux")]
fn decode(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    // SAFETY: the family says which of the two structs the storage holds.
    unsafe {
        match s.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                let a = &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Writes `addr` into `s`; returns its length.
#[cfg(target_os = "linux")]
fn encode(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let a = socket2::SockAddr::from(addr);
    let len = a.len() as usize;
    // SAFETY: `a` holds `len` bytes of a sockaddr, which fits in a sockaddr_storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            a.as_ptr().cast::<u8>(),
            (s as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    len as _
}
