//! Segments the controller itself sends (the ACK completing a server's handshake, RSTs to
//! clients whose server refused or never answered), through raw IP sockets: the guard speaks
//! in the name of the client or the server, so it writes the IP header itself.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};
use etherparse::PacketBuilder;
use synguard_common::cookie::FlowKey;

use crate::{
    flows::events::{client, server},
    flows::table::{BackendSyn, Command},
};

pub struct Injector {
    v4: OwnedFd,
    v6: OwnedFd,
}

fn raw_socket(family: libc::c_int) -> Result<OwnedFd> {
    // IPPROTO_RAW: we supply the IP header (IP_HDRINCL is implied, for IPv6 too).
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .context("opening a raw IP socket (needs CAP_NET_RAW)");
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Injector {
    pub fn new() -> Result<Self> {
        Ok(Self {
            v4: raw_socket(libc::AF_INET)?,
            v6: raw_socket(libc::AF_INET6)?,
        })
    }

    /// Sends what a command asks to send; other commands are not ours.
    pub fn send(&self, command: &Command) -> Result<()> {
        match *command {
            Command::AckServer {
                ref flow,
                seq,
                ack,
                window,
                timestamps,
                ref payload,
            } => self.send_segment(flow, false, seq, ack, window, timestamps, false, payload),
            Command::ResetClient { flow, seq, ack } => {
                self.send_segment(&flow, true, seq, ack, 0, None, true, &[])
            }
            Command::SynServer { flow, syn } => {
                let packet = build_syn(client(&flow), server(&flow), &syn)?;
                self.send_packet(&flow, server(&flow), &packet)
            }
            Command::Remove { .. } => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_segment(
        &self,
        flow: &FlowKey,
        to_client: bool,
        seq: u32,
        ack: u32,
        window: u16,
        timestamps: Option<(u32, u32)>,
        reset: bool,
        payload: &[u8],
    ) -> Result<()> {
        let (from, to) = if to_client {
            (server(flow), client(flow))
        } else {
            (client(flow), server(flow))
        };
        let packet = build(from, to, seq, ack, window, timestamps, reset, payload)?;
        self.send_packet(flow, to, &packet)
    }

    fn send_packet(&self, flow: &FlowKey, to: SocketAddr, packet: &[u8]) -> Result<()> {
        let fd = if flow.family == 4 { &self.v4 } else { &self.v6 };
        let dest = socket2_addr(SocketAddr::new(to.ip(), 0));
        // SAFETY: buffer and address outlive the call; lengths match them.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr() as *const libc::c_void,
                packet.len(),
                0,
                &dest.0 as *const libc::sockaddr_storage as *const libc::sockaddr,
                dest.1,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("sending to {to}"));
        }
        Ok(())
    }
}

/// The SYN to the server, as the data plane first wrote it (see `synguard_common::segment`).
fn build_syn(from: SocketAddr, to: SocketAddr, syn: &BackendSyn) -> Result<Vec<u8>> {
    use etherparse::TcpOptionElement as O;
    let builder = ip_builder(from, to)?;
    let mut tcp = builder
        .tcp(from.port(), to.port(), syn.seq, syn.window)
        .syn();
    if syn.ecn {
        tcp = tcp.ece().cwr();
    }
    let mut options = vec![O::MaximumSegmentSize(syn.mss)];
    match syn.tsval {
        Some(tsval) if syn.sack_permitted => {
            options.extend([O::SelectiveAcknowledgementPermitted, O::Timestamp(tsval, 0)])
        }
        Some(tsval) => options.extend([O::Noop, O::Noop, O::Timestamp(tsval, 0)]),
        None if syn.sack_permitted => {
            options.extend([O::Noop, O::Noop, O::SelectiveAcknowledgementPermitted])
        }
        None => {}
    }
    if let Some(shift) = syn.window_scale {
        options.extend([O::Noop, O::WindowScale(shift)]);
    }
    let tcp = tcp.options(&options)?;
    let mut packet = Vec::with_capacity(tcp.size(0));
    tcp.write(&mut packet, &[])?;
    Ok(packet)
}

fn ip_builder(
    from: SocketAddr,
    to: SocketAddr,
) -> Result<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
    Ok(match (from.ip(), to.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => PacketBuilder::ipv4(src.octets(), dst.octets(), 64),
        (IpAddr::V6(src), IpAddr::V6(dst)) => PacketBuilder::ipv6(src.octets(), dst.octets(), 64),
        _ => anyhow::bail!("mixed address families {from} -> {to}"),
    })
}

/// An IP packet with a TCP segment, checksums filled in.
#[allow(clippy::too_many_arguments)]
fn build(
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    ack: u32,
    window: u16,
    timestamps: Option<(u32, u32)>,
    reset: bool,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let mut tcp = ip_builder(from, to)?
        .tcp(from.port(), to.port(), seq, window)
        .ack(ack);
    if reset {
        tcp = tcp.rst();
    }
    if let Some((tsval, tsecr)) = timestamps {
        tcp = tcp.options(&[
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(tsval, tsecr),
        ])?;
    }
    if !payload.is_empty() {
        tcp = tcp.psh();
    }
    let mut packet = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut packet, payload)?;
    Ok(packet)
}

fn socket2_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_segments_have_valid_checksums() {
        let from: SocketAddr = "198.18.1.2:40000".parse().unwrap();
        let to: SocketAddr = "198.19.1.2:80".parse().unwrap();
        let packet = build(from, to, 7, 9, 512, Some((1, 2)), false, b"GET /").unwrap();
        let sliced = etherparse::SlicedPacket::from_ip(&packet).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP")
        };
        assert_eq!((tcp.sequence_number(), tcp.acknowledgment_number()), (7, 9));
        assert_eq!(tcp.payload(), b"GET /");
        let etherparse::NetSlice::Ipv4(ip) = sliced.net.unwrap() else {
            panic!("not IPv4")
        };
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), expected);
        let reset = build(to, from, 1, 2, 0, None, true, &[]).unwrap();
        assert_eq!(reset[20 + 13] & 0x04, 0x04, "RST set");
    }
}
