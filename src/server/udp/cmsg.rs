//! The ancillary data of the UDP echo (Linux): the socket options that ask for it, what a
//! received datagram carries (the address it was sent to, the socket's drop count, the size
//! of GRO's segments) and what an echo carries (the address it leaves from, GSO's segment).
//!
//! `std` and `socket2` have no ancillary data, and no crate the project uses reads or writes
//! these messages, so this file uses the C interface itself.

#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
use std::io;
#[cfg(target_os = "linux")]
use std::mem;
use std::net::IpAddr;
#[cfg(target_os = "linux")]
use std::net::{Ipv4Addr, Ipv6Addr};
#[cfg(target_os = "linux")]
use std::os::fd::RawFd;

#[cfg(target_os = "linux")]
/// Room for the ancillary data of one message, either way (8-byte aligned).
pub(crate) type Control = [u64; 16];

/// The address a datagram was sent to, and the interface it came in on: an echo leaves from
/// it, so that a peer of a wildcard-bound socket hears back from the address it targeted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Local {
    pub(crate) ip: IpAddr,
    pub(crate) ifindex: u32,
}

/// What a received datagram's ancillary data said.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) local: Option<Local>,
    /// The socket's count of datagrams the kernel dropped (`SO_RXQ_OVFL`), when nonzero.
    pub(crate) drops: Option<u32>,
    /// GRO coalesced datagrams of this size (the last may be shorter).
    pub(crate) segment: Option<u16>,
}

#[cfg(target_os = "linux")]
fn set(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option of the size given, on a descriptor the caller owns.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
/// Asks for the address each datagram was sent to (`IP_PKTINFO`, `IPV6_RECVPKTINFO`).
pub(crate) fn want_local(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        set(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        set(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

#[cfg(target_os = "linux")]
/// Asks for the socket's drop count with each datagram (`SO_RXQ_OVFL`).
pub(crate) fn want_drops(fd: RawFd) -> io::Result<()> {
    set(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

#[cfg(target_os = "linux")]
/// Lets the kernel hand over datagrams of one source coalesced (`UDP_GRO`).
pub(crate) fn want_gro(fd: RawFd) -> io::Result<()> {
    set(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

#[cfg(target_os = "linux")]
/// Whether the kernel knows `UDP_SEGMENT` (asked with a segment size of 0, which sends as
/// before).
pub(crate) fn probe_gso(fd: RawFd) -> io::Result<()> {
    set(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

#[cfg(target_os = "linux")]
/// Reads a received message's ancillary data.
pub(crate) fn parse(hdr: &libc::msghdr) -> Meta {
    let mut meta = Meta::default();
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros stay in it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    meta.drops = Some(data.cast::<u32>().read_unaligned());
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    // The local address the datagram was for: the one in its header, or for
                    // a broadcast the receiving interface's own (an echo cannot leave from a
                    // broadcast address).
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    meta.local = (!ip.is_unspecified()).then_some(Local {
                        ip: IpAddr::V4(ip),
                        ifindex: info.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    // A datagram to a multicast group is answered from the routed address.
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    meta.local = (!ip.is_multicast()).then_some(Local {
                        ip: IpAddr::V6(ip),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let size = data.cast::<libc::c_int>().read_unaligned();
                    meta.segment = u16::try_from(size).ok().filter(|&s| s > 0);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    meta
}

#[cfg(target_os = "linux")]
/// Writes an echo's ancillary data into `control` and sets `hdr`'s control fields: the
/// address it leaves from and GSO's segment size (`segment` 0: none).
pub(crate) fn build(
    hdr: &mut libc::msghdr,
    control: &mut Control,
    local: Option<Local>,
    segment: u16,
) {
    *control = [0; 16];
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = mem::size_of::<Control>() as _;
    let mut used = 0usize;
    // SAFETY: each header written is found by CMSG_FIRSTHDR/CMSG_NXTHDR inside `control`,
    // which has room for both (64 bytes at most of 128).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        let mut put = |c: *mut libc::cmsghdr, level, kind, bytes: &[u8]| {
            (*c).cmsg_level = level;
            (*c).cmsg_type = kind;
            (*c).cmsg_len = libc::CMSG_LEN(bytes.len() as u32) as _;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), libc::CMSG_DATA(c), bytes.len());
            used += libc::CMSG_SPACE(bytes.len() as u32) as usize;
        };
        match local {
            Some(Local {
                ip: IpAddr::V4(ip), ..
            }) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                put(c, libc::IPPROTO_IP, libc::IP_PKTINFO, as_bytes(&info));
                c = libc::CMSG_NXTHDR(hdr, c);
            }
            Some(Local {
                ip: IpAddr::V6(ip),
                ifindex,
            }) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                put(c, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, as_bytes(&info));
                c = libc::CMSG_NXTHDR(hdr, c);
            }
            None => {}
        }
        if segment > 0 {
            put(c, libc::SOL_UDP, libc::UDP_SEGMENT, &segment.to_ne_bytes());
        }
    }
    hdr.msg_controllen = used as _;
    if used == 0 {
        hdr.msg_control = std::ptr::null_mut();
    }
}

#[cfg(target_os = "linux")]
/// The bytes of a plain C struct.
fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: `T` is a C struct of integers, read as the bytes it is made of.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), mem::size_of::<T>()) }
}
