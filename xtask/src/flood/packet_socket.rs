//! The flood lab's fast generator: crafted TCP frames (etherparse) written to an AF_PACKET
//! socket in batches (sendmmsg), run inside the client namespace. hping3 sends one packet
//! per syscall and tops out near 150-200k packets/s here; this sends 64 per syscall with
//! blocking writes, so a full link queue slows it down instead of failing it, and the guard,
//! not the generator, is what limits the rate.

use std::{
    ffi::CString,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use etherparse::PacketBuilder;

use crate::flood::plan::Scenario;

const BATCH: usize = 64;
/// Every frame is Ethernet + IPv4 + TCP without options.
const FRAME_LEN: usize = 14 + 20 + 20;

/// Where a scenario's spoofed sources come from; all inside the lab's 198.18.0.0/15.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sources {
    /// Random in 198.18.128.0/17 ([`crate::lab::SPOOFED_PREFIX`]): answers to them go back
    /// to the client namespace, where they die.
    Random,
    /// One spoofed address.
    Fixed([u8; 4]),
    /// Random in the legitimate client's /24, its own address included.
    ClientPrefix([u8; 3]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flags {
    Syn,
    Ack,
    Rst,
    FinAck,
}

pub fn sources(scenario: Scenario) -> Sources {
    match scenario {
        Scenario::FixedSyn => Sources::Fixed(crate::flood::plan::FIXED_SOURCE),
        Scenario::ClientPrefixSyn => Sources::ClientPrefix(crate::flood::plan::CLIENT_PREFIX),
        _ => Sources::Random,
    }
}

/// The frames a scenario sends, round robin.
pub fn kinds(scenario: Scenario) -> &'static [Flags] {
    match scenario {
        Scenario::RandomSyn | Scenario::FixedSyn | Scenario::ClientPrefixSyn => &[Flags::Syn],
        Scenario::Ack => &[Flags::Ack],
        Scenario::Rst => &[Flags::Rst],
        Scenario::Fin => &[Flags::FinAck],
        Scenario::Mixed => &[Flags::Syn, Flags::Ack, Flags::Rst, Flags::FinAck],
    }
}

/// The addresses `sources` spoofs: a base address and how many of its low bits are random
/// (drawn here for the packet-socket generator, in XDP for the live-frames one).
fn source_range(sources: Sources) -> ([u8; 4], u32) {
    match sources {
        Sources::Random => ([198, 18, 128, 0], 15),
        Sources::Fixed(address) => (address, 0),
        Sources::ClientPrefix([a, b, c]) => ([a, b, c, 0], 8),
    }
}

fn source_address(sources: Sources, rng: &mut fastrand::Rng) -> [u8; 4] {
    let (base, random_bits) = source_range(sources);
    let mask = u32::MAX.checked_shr(32 - random_bits).unwrap_or(0);
    (u32::from_be_bytes(base) & !mask | rng.u32(..) & mask).to_be_bytes()
}

/// The live-frames generator's templates for a scenario (one per kind, toward the lab server)
/// and how many low bits of their source it randomizes, the same sources as [`frame`] draws.
pub fn live_templates(scenario: Scenario, macs: ([u8; 6], [u8; 6])) -> (Vec<Vec<u8>>, u32) {
    let (base, source_bits) = source_range(sources(scenario));
    let dst = (
        crate::lab::SERVER_ADDR
            .parse::<std::net::Ipv4Addr>()
            .expect("the lab's server address parses")
            .octets(),
        crate::lab::SERVER_PORT,
    );
    let mut rng = fastrand::Rng::new();
    let templates = kinds(scenario)
        .iter()
        .map(|&kind| {
            let mut out = Vec::with_capacity(FRAME_LEN);
            frame(macs, Sources::Fixed(base), kind, dst, &mut rng, &mut out);
            out
        })
        .collect();
    (templates, source_bits)
}

/// One frame toward `dst`:`port` from a spoofed source, random port and numbers.
pub fn frame(
    macs: ([u8; 6], [u8; 6]),
    sources: Sources,
    flags: Flags,
    dst: ([u8; 4], u16),
    rng: &mut fastrand::Rng,
    out: &mut Vec<u8>,
) {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(source_address(sources, rng), dst.0, 64)
        .tcp(rng.u16(1024..), dst.1, rng.u32(..), 64240);
    let builder = match flags {
        Flags::Syn => builder.syn(),
        Flags::Ack => builder.ack(rng.u32(..)),
        Flags::Rst => builder.rst(),
        Flags::FinAck => builder.fin().ack(rng.u32(..)),
    };
    out.clear();
    builder
        .write(out, &[])
        .expect("writing to a Vec cannot fail");
}

/// Floods from `iface` toward the guard's MAC for `seconds`, at `rate` frames per second
/// (0: as fast as the link takes them); returns the frames sent.
pub fn run(
    iface: &str,
    guard_mac: &str,
    scenario: Scenario,
    seconds: u32,
    rate: u64,
) -> Result<u64> {
    let destination_mac = parse_mac(guard_mac)?;
    let own_mac = parse_mac(
        std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
            .with_context(|| format!("reading {iface}'s MAC address"))?
            .trim(),
    )?;
    let socket = PacketSocket::bind(iface)?;
    let dst = (
        crate::lab::SERVER_ADDR
            .parse::<std::net::Ipv4Addr>()?
            .octets(),
        crate::lab::SERVER_PORT,
    );
    let (sources, kinds) = (sources(scenario), kinds(scenario));
    let mut rng = fastrand::Rng::new();
    let mut batch = vec![0u8; BATCH * FRAME_LEN];
    let mut frame_bytes = Vec::with_capacity(FRAME_LEN);
    let mut sent = 0u64;
    let mut next_kind = 0;
    let start = Instant::now();
    let end = start + Duration::from_secs(u64::from(seconds));
    let mut offered = 0u64;
    while Instant::now() < end {
        if rate > 0 {
            // Open loop: batch n leaves at n * BATCH / rate, whatever the link took before.
            let due = start + Duration::from_secs_f64(offered as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            offered += BATCH as u64;
        }
        for slot in batch.chunks_exact_mut(FRAME_LEN) {
            frame(
                (own_mac, destination_mac),
                sources,
                kinds[next_kind % kinds.len()],
                dst,
                &mut rng,
                &mut frame_bytes,
            );
            next_kind += 1;
            slot.copy_from_slice(&frame_bytes);
        }
        sent += socket.send_batch(&mut batch)?;
    }
    Ok(sent)
}

pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{text:?} is not a MAC address"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a MAC address"))
}

struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    fn bind(iface: &str) -> Result<PacketSocket> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let name = CString::new(iface)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {iface} in this namespace");
        }
        // SAFETY: plain socket(2); protocol 0 receives nothing.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: `raw` is a fresh descriptor we own from here on.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = index as i32;
        // SAFETY: bind(2) with a sockaddr_ll of the size we pass.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        // A send buffer for several batches in flight (root may exceed wmem_max).
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt(2) with an int option of the size we pass.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Ok(PacketSocket { fd })
    }

    /// Sends every frame of `batch` (FRAME_LEN each) in one sendmmsg; returns how many the
    /// kernel took. A frame the link could not queue is not an error here: it is the flood.
    fn send_batch(&self, batch: &mut [u8]) -> Result<u64> {
        use std::os::fd::AsRawFd;
        let mut iovecs: Vec<libc::iovec> = batch
            .chunks_exact_mut(FRAME_LEN)
            .map(|frame| libc::iovec {
                iov_base: frame.as_mut_ptr().cast(),
                iov_len: FRAME_LEN,
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: msghdr is plain data; zeroed is valid.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_iov = iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: every message points at a live iovec over `batch`.
        let rc = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                messages.as_mut_ptr(),
                messages.len() as u32,
                0,
            )
        };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::ENETDOWN | libc::EINTR) => Ok(0),
                _ => Err(error).context("sendmmsg"),
            };
        }
        Ok(rc as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    #[test]
    fn frames_are_valid_tcp_from_the_scenarios_sources() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut bytes = Vec::new();
        for scenario in Scenario::ALL {
            for &flags in kinds(scenario) {
                for _ in 0..50 {
                    frame(
                        ([2; 6], [4; 6]),
                        sources(scenario),
                        flags,
                        ([198, 19, 1, 2], 80),
                        &mut rng,
                        &mut bytes,
                    );
                    assert_eq!(bytes.len(), FRAME_LEN);
                    let packet = SlicedPacket::from_ethernet(&bytes).unwrap();
                    let Some(NetSlice::Ipv4(ip)) = packet.net else {
                        panic!("not IPv4")
                    };
                    let source = ip.header().source();
                    match sources(scenario) {
                        Sources::Random => assert!(source[..2] == [198, 18] && source[2] >= 128),
                        Sources::Fixed(address) => assert_eq!(source, address),
                        Sources::ClientPrefix(prefix) => assert_eq!(source[..3], prefix),
                    }
                    let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
                        panic!("not TCP")
                    };
                    let header = tcp.to_header();
                    assert_eq!(
                        header
                            .calc_checksum_ipv4(&ip.header().to_header(), &[])
                            .unwrap(),
                        header.checksum
                    );
                    assert_eq!(
                        (header.syn, header.ack, header.rst, header.fin),
                        match flags {
                            Flags::Syn => (true, false, false, false),
                            Flags::Ack => (false, true, false, false),
                            Flags::Rst => (false, false, true, false),
                            Flags::FinAck => (false, true, false, true),
                        }
                    );
                    assert_eq!(header.destination_port, 80);
                }
            }
        }
    }

    #[test]
    fn macs_parse_or_say_why_not() {
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f").unwrap(),
            [10, 27, 44, 61, 78, 95]
        );
        assert!(parse_mac("0a:1b").is_err());
        assert!(parse_mac("zz:1b:2c:3d:4e:5f").is_err());
    }
}
