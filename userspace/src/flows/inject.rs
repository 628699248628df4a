//! Segments the controller itself sends (the ACK completing a server's handshake, RSTs to
//! clients whose server refused or never answered, to both ends of a flow that idled out), through raw IP sockets: the guard speaks
//! in the name of the client or the server, so it writes the IP header itself.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};
use synguard_common::{
    cookie::FlowKey,
    parse::TcpFlags,
    segment::{SEGMENT_BUF_LEN, SegmentSpec, cover_payload, write_segment},
};

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
        match command {
            Command::AckServer {
                flow,
                seq,
                ack,
                window,
                timestamps,
                payload,
            } => {
                let mut flags = TcpFlags::ACK;
                if !payload.is_empty() {
                    flags |= TcpFlags::PSH;
                }
                let spec = SegmentSpec {
                    to_client: false,
                    seq: *seq,
                    ack: *ack,
                    flags,
                    window: *window,
                    mss: 0,
                    sack_permitted: false,
                    timestamps: *timestamps,
                    window_scale: None,
                };
                self.send_packet(flow, server(flow), &packet(flow, &spec, payload))
            }
            Command::Reset {
                flow,
                to_client,
                seq,
                ack,
            } => {
                let spec = SegmentSpec {
                    to_client: *to_client,
                    seq: *seq,
                    ack: *ack,
                    flags: TcpFlags::RST | TcpFlags::ACK,
                    window: 0,
                    mss: 0,
                    sack_permitted: false,
                    timestamps: None,
                    window_scale: None,
                };
                let to = if *to_client {
                    client(flow)
                } else {
                    server(flow)
                };
                self.send_packet(flow, to, &packet(flow, &spec, &[]))
            }
            Command::SynServer { flow, syn } => {
                let spec = syn_spec(syn);
                self.send_packet(flow, server(flow), &packet(flow, &spec, &[]))
            }
            Command::Remove { .. }
            | Command::RememberForgotten { .. }
            | Command::ClearForgotten { .. } => Ok(()),
        }
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

/// The SYN to the server, as the data plane first wrote it.
fn syn_spec(syn: &BackendSyn) -> SegmentSpec {
    SegmentSpec::syn_to_server(
        syn.seq,
        syn.window,
        syn.mss,
        syn.sack_permitted,
        syn.window_scale,
        syn.ecn,
        syn.tsval,
    )
}

/// The IP packet of `spec` on `flow` carrying `payload`, written by the data plane's writer.
fn packet(flow: &FlowKey, spec: &SegmentSpec, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; SEGMENT_BUF_LEN + payload.len()];
    let header: &mut [u8; SEGMENT_BUF_LEN] = (&mut packet[..SEGMENT_BUF_LEN])
        .try_into()
        .expect("the buffer holds a header's room");
    let len = write_segment(flow, spec, header);
    packet.truncate(len + payload.len());
    packet[len..].copy_from_slice(payload);
    if !payload.is_empty() {
        cover_payload(&mut packet, len, payload.len(), flow.family == 4);
    }
    packet
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

    fn tcp_checksum_holds(packet: &[u8]) -> (u32, u32, Vec<u8>) {
        let sliced = etherparse::SlicedPacket::from_ip(packet).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = &sliced.transport else {
            panic!("not TCP")
        };
        let expected = match sliced.net.as_ref().unwrap() {
            etherparse::NetSlice::Ipv4(ip) => {
                let header = ip.header().to_header();
                assert_eq!(header.calc_header_checksum(), header.header_checksum);
                assert_eq!(usize::from(header.total_len), packet.len());
                tcp.to_header().calc_checksum_ipv4(&header, tcp.payload())
            }
            etherparse::NetSlice::Ipv6(ip) => {
                let header = ip.header().to_header();
                assert_eq!(usize::from(header.payload_length) + 40, packet.len());
                tcp.to_header().calc_checksum_ipv6(&header, tcp.payload())
            }
        };
        assert_eq!(tcp.checksum(), expected.unwrap());
        (
            tcp.sequence_number(),
            tcp.acknowledgment_number(),
            tcp.payload().to_vec(),
        )
    }

    #[test]
    fn the_controllers_segments_come_from_the_data_planes_writer_with_valid_checksums() {
        let v4 = FlowKey::v4([198, 18, 1, 2], 40000, [198, 19, 1, 2], 80);
        let address = |text: &str| text.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let v6 = FlowKey {
            client: address("2001:db8:1::2"),
            server: address("2001:db8:2::2"),
            client_port: 40000,
            server_port: 80,
            family: 6,
            _pad: [0; 3],
        };
        for flow in [v4, v6] {
            for payload in [&b""[..], b"GET /", b"GET / HTTP/1.1\r\n"] {
                let spec = SegmentSpec {
                    to_client: false,
                    seq: 7,
                    ack: 9,
                    flags: TcpFlags::ACK | TcpFlags::PSH,
                    window: 512,
                    mss: 0,
                    sack_permitted: false,
                    timestamps: Some((1, 2)),
                    window_scale: None,
                };
                let (seq, ack, data) = tcp_checksum_holds(&packet(&flow, &spec, payload));
                assert_eq!((seq, ack, data.as_slice()), (7, 9, payload));
            }
            let syn = BackendSyn {
                seq: 100,
                window: 64240,
                mss: 1460,
                window_scale: Some(7),
                sack_permitted: true,
                ecn: true,
                tsval: Some(5),
            };
            let (seq, _, _) = tcp_checksum_holds(&packet(&flow, &syn_spec(&syn), &[]));
            assert_eq!(seq, 100);
        }
    }
}
