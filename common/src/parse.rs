//! Frame parser: Ethernet, up to two 802.1Q/802.1ad VLAN tags, IPv4, IPv6 with extension
//! headers, TCP with options.
//!
//! The parser returns plain values (addresses, ports, sequence numbers, decoded options) plus
//! the offsets a rewriting path needs. Every way a frame can be malformed maps to one
//! [`ParseError`], so the data plane can give it a defined verdict and count it.

use crate::{
    field::{
        IPPROTO_TCP, be16, be32,
        ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN},
        ipv4, ipv6, ipv6_extension, tcp, vlan,
    },
    frame::FrameBytes,
    tcp_options::{TcpOptionWalker, TcpOptions},
};

/// More stacked tags than this and the frame is refused (802.1ad QinQ uses two).
pub const MAX_VLAN_TAGS: usize = 2;
/// Longest IPv6 extension-header chain followed before the frame is refused.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 6;

/// Every way a frame can be malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    TruncatedEthernet,
    TruncatedVlan,
    TooManyVlanTags,
    TruncatedIp,
    BadIpVersion,
    BadIpv4HeaderLength,
    /// The IP length field disagrees with the frame (or the extension headers overrun it).
    BadIpLength,
    Ipv6ExtensionChainTooLong,
    TruncatedTcp,
    BadTcpDataOffset,
    BadTcpOptions,
    /// A flag combination no TCP sender produces (SYN+FIN, SYN+RST, none, ...).
    BadTcpFlags,
}

impl ParseError {
    pub const ALL: [ParseError; 12] = [
        ParseError::TruncatedEthernet,
        ParseError::TruncatedVlan,
        ParseError::TooManyVlanTags,
        ParseError::TruncatedIp,
        ParseError::BadIpVersion,
        ParseError::BadIpv4HeaderLength,
        ParseError::BadIpLength,
        ParseError::Ipv6ExtensionChainTooLong,
        ParseError::TruncatedTcp,
        ParseError::BadTcpDataOffset,
        ParseError::BadTcpOptions,
        ParseError::BadTcpFlags,
    ];
}

/// TCP control bits (RFC 9293 section 3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// True when every bit of `bits` is set.
    #[inline(always)]
    pub fn has(self, bits: u8) -> bool {
        self.0 & bits == bits
    }
}

/// Source and destination addresses in network byte order; IPv4 addresses sit in the first
/// 4 bytes, the rest zero. A struct, not an enum per family: an enum's unused payload bytes
/// are undefined, and LLVM fills them from whatever register is at hand (a packet pointer,
/// say), which the verifier rightly refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpAddrs {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// 4 or 6.
    pub family: u8,
}

impl IpAddrs {
    #[inline(always)]
    pub fn v4(src: [u8; 4], dst: [u8; 4]) -> Self {
        let mut addrs = IpAddrs {
            src: [0; 16],
            dst: [0; 16],
            family: 4,
        };
        addrs.src[..4].copy_from_slice(&src);
        addrs.dst[..4].copy_from_slice(&dst);
        addrs
    }

    #[inline(always)]
    pub fn v6(src: [u8; 16], dst: [u8; 16]) -> Self {
        IpAddrs {
            src,
            dst,
            family: 6,
        }
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.family == 6
    }
}

/// A TCP header, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSegment {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// Header length including options (20..=60).
    pub header_len: u8,
    pub payload_len: u16,
    pub options: TcpOptions,
}

/// What kind of payload an IP packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// A TCP segment: decoded into [`ParseScratch::segment`].
    Tcp,
    /// An IPv4 or IPv6 fragment: its transport header is absent or incomplete.
    Fragment,
    /// Any other upper-layer protocol (UDP, ICMP, ESP, ...).
    Other,
}

/// What an IP packet carries. The decoded TCP header itself goes to the parse scratch space
/// rather than into this value: results travel by value through the parser, and in BPF
/// every byte of them costs stack (512 bytes in all), while an enum carrying the segment
/// leaves undefined payload bytes that LLVM fills from any register at hand (a packet
/// pointer, say), which the verifier rightly refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    pub kind: TransportKind,
    /// The upper-layer protocol number (the last next-header for IPv6).
    pub protocol: u8,
}

/// Where the parser works: the TCP header copy with its option walk, and the decoded segment.
/// The XDP program keeps it in map memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseScratch {
    pub walker: TcpOptionWalker,
    /// The TCP segment of the last frame parsed (valid when its transport is TCP).
    pub segment: TcpSegment,
}

/// An IPv4 or IPv6 packet, decoded down to its transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub addrs: IpAddrs,
    pub l3_offset: u16,
    pub l4_offset: u16,
    /// Offset just past the IP payload (Ethernet padding lies beyond it).
    pub ip_end: u16,
    pub transport: Transport,
}

/// The network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    NonIp { ethertype: u16 },
    Ip(IpPacket),
}

/// A well-formed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedFrame {
    pub vlan_tags: u8,
    pub l3: L3,
}

/// Whether a TCP sender can produce these flags: netfilter's table of valid combinations
/// (PSH, ECE and CWR are free to appear with any of them).
#[inline(always)]
pub fn flags_are_valid(flags: TcpFlags) -> bool {
    const FIN: u8 = TcpFlags::FIN;
    const SYN: u8 = TcpFlags::SYN;
    const RST: u8 = TcpFlags::RST;
    const ACK: u8 = TcpFlags::ACK;
    const URG: u8 = TcpFlags::URG;
    matches!(
        flags.0 & (FIN | SYN | RST | ACK | URG),
        SYN | 0x22 /* SYN|URG */ | 0x12 /* SYN|ACK */ | RST | 0x14 /* RST|ACK */
            | 0x11 /* FIN|ACK */ | 0x31 /* FIN|ACK|URG */ | ACK | 0x30 /* ACK|URG */
    )
}

/// Parses a frame starting with its Ethernet header, with fresh scratch space.
pub fn parse_frame<F: FrameBytes + ?Sized>(frame: &F) -> Result<ParsedFrame, ParseError> {
    parse_frame_with(frame, &mut ParseScratch::default())
}

/// The IP packet and TCP segment of a well-formed TCP frame (host convenience).
pub fn parse_tcp_frame<F: FrameBytes + ?Sized>(frame: &F) -> Option<(IpPacket, TcpSegment)> {
    let mut scratch = ParseScratch::default();
    match parse_frame_with(frame, &mut scratch) {
        Ok(ParsedFrame {
            l3: L3::Ip(packet), ..
        }) if packet.transport.kind == TransportKind::Tcp => Some((packet, scratch.segment)),
        _ => None,
    }
}

/// Parses a frame, copying its TCP header into `scratch`. The XDP program passes scratch space
/// that lives in map memory: the verifier does not track map contents, so every step of the option
/// walk looks alike to it and verification converges at once (on the stack, each step's
/// precisely known offsets multiplied the paths past the verifier's limit).
#[inline(always)]
pub fn parse_frame_with<F: FrameBytes + ?Sized>(
    frame: &F,
    scratch: &mut ParseScratch,
) -> Result<ParsedFrame, ParseError> {
    let eth: [u8; ethernet::HEADER_LEN] = frame.load(0).ok_or(ParseError::TruncatedEthernet)?;
    let mut ethertype = be16(&eth, ethernet::ETHERTYPE);
    let mut offset = ethernet::HEADER_LEN;
    let mut vlan_tags = 0u8;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag: [u8; vlan::TAG_LEN] = frame.load(offset).ok_or(ParseError::TruncatedVlan)?;
        ethertype = be16(&tag, vlan::ETHERTYPE);
        offset += vlan::TAG_LEN;
        vlan_tags += 1;
    }
    let l3 = match ethertype {
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Err(ParseError::TooManyVlanTags),
        ETHERTYPE_IPV4 => L3::Ip(parse_ipv4(frame, offset, scratch)?),
        ETHERTYPE_IPV6 => L3::Ip(parse_ipv6(frame, offset, scratch)?),
        other => L3::NonIp { ethertype: other },
    };
    Ok(ParsedFrame { vlan_tags, l3 })
}

/// RFC 791 section 3.1.
#[inline(always)]
fn parse_ipv4<F: FrameBytes + ?Sized>(
    frame: &F,
    offset: usize,
    scratch: &mut ParseScratch,
) -> Result<IpPacket, ParseError> {
    let h: [u8; ipv4::MIN_HEADER_LEN] = frame.load(offset).ok_or(ParseError::TruncatedIp)?;
    if h[ipv4::VERSION_IHL] >> 4 != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let header_len = (h[ipv4::VERSION_IHL] & 0x0f) as usize * 4;
    if header_len < ipv4::MIN_HEADER_LEN {
        return Err(ParseError::BadIpv4HeaderLength);
    }
    let total_len = be16(&h, ipv4::TOTAL_LEN) as usize;
    let ip_end = offset + total_len;
    if total_len < header_len || ip_end > frame.len() {
        return Err(ParseError::BadIpLength);
    }
    let fragment = be16(&h, ipv4::FLAGS_FRAGMENT);
    let more_fragments = fragment & 0x2000 != 0;
    let fragment_offset = fragment & 0x1fff;
    let l4_offset = offset + header_len;
    let transport = if more_fragments || fragment_offset != 0 {
        Transport {
            kind: TransportKind::Fragment,
            protocol: h[ipv4::PROTOCOL],
        }
    } else if h[ipv4::PROTOCOL] == IPPROTO_TCP {
        parse_tcp(frame, l4_offset, ip_end, scratch)?
    } else {
        Transport {
            kind: TransportKind::Other,
            protocol: h[ipv4::PROTOCOL],
        }
    };
    Ok(IpPacket {
        addrs: IpAddrs::v4(
            be32(&h, ipv4::SOURCE).to_be_bytes(),
            be32(&h, ipv4::DESTINATION).to_be_bytes(),
        ),
        l3_offset: offset as u16,
        l4_offset: l4_offset as u16,
        ip_end: ip_end as u16,
        transport,
    })
}

/// RFC 8200 sections 3 and 4: the fixed header, then the extension-header chain.
#[inline(always)]
fn parse_ipv6<F: FrameBytes + ?Sized>(
    frame: &F,
    offset: usize,
    scratch: &mut ParseScratch,
) -> Result<IpPacket, ParseError> {
    let h: [u8; ipv6::HEADER_LEN] = frame.load(offset).ok_or(ParseError::TruncatedIp)?;
    if h[ipv6::VERSION_CLASS_FLOW] >> 4 != 6 {
        return Err(ParseError::BadIpVersion);
    }
    let payload_len = be16(&h, ipv6::PAYLOAD_LEN) as usize;
    let ip_end = offset + ipv6::HEADER_LEN + payload_len;
    if ip_end > frame.len() {
        return Err(ParseError::BadIpLength);
    }
    let mut next_header = h[ipv6::NEXT_HEADER];
    let mut at = offset + ipv6::HEADER_LEN;
    let mut fragment = false;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        match next_header {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6: length in 8-octet
            // units, not counting the first 8.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let e: [u8; 2] = frame.load(at).ok_or(ParseError::TruncatedIp)?;
                next_header = e[ipv6_extension::NEXT_HEADER];
                at += (e[ipv6_extension::LENGTH] as usize + 1) * 8;
            }
            // Authentication header: length in 4-octet units, not counting the first 8.
            51 => {
                let e: [u8; 2] = frame.load(at).ok_or(ParseError::TruncatedIp)?;
                next_header = e[ipv6_extension::NEXT_HEADER];
                at += (e[ipv6_extension::LENGTH] as usize + 2) * 4;
            }
            44 => {
                let e: [u8; ipv6_extension::FRAGMENT_HEADER_LEN] =
                    frame.load(at).ok_or(ParseError::TruncatedIp)?;
                next_header = e[ipv6_extension::NEXT_HEADER];
                at += ipv6_extension::FRAGMENT_HEADER_LEN;
                let offset_and_more = be16(&e, ipv6_extension::FRAGMENT_OFFSET_FLAGS);
                // An atomic fragment (offset 0, M clear) is a whole packet (RFC 6946).
                if offset_and_more & 0xfff9 != 0 {
                    fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    if at > ip_end {
        return Err(ParseError::BadIpLength);
    }
    let transport = if fragment {
        Transport {
            kind: TransportKind::Fragment,
            protocol: next_header,
        }
    } else {
        match next_header {
            0 | 43 | 60 | 135 | 139 | 140 | 51 | 44 => {
                return Err(ParseError::Ipv6ExtensionChainTooLong);
            }
            IPPROTO_TCP => parse_tcp(frame, at, ip_end, scratch)?,
            protocol => Transport {
                kind: TransportKind::Other,
                protocol,
            },
        }
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[ipv6::SOURCE..ipv6::SOURCE + 16]);
    dst.copy_from_slice(&h[ipv6::DESTINATION..ipv6::DESTINATION + 16]);
    Ok(IpPacket {
        addrs: IpAddrs::v6(src, dst),
        l3_offset: offset as u16,
        l4_offset: at as u16,
        ip_end: ip_end as u16,
        transport,
    })
}

/// RFC 9293 section 3.1. The header, options included, is copied in one load.
#[inline(always)]
fn parse_tcp<F: FrameBytes + ?Sized>(
    frame: &F,
    offset: usize,
    ip_end: usize,
    scratch: &mut ParseScratch,
) -> Result<Transport, ParseError> {
    let available = ip_end - offset;
    if available < tcp::MIN_HEADER_LEN {
        return Err(ParseError::TruncatedTcp);
    }
    let copy_len = if available < tcp::MAX_HEADER_LEN {
        available
    } else {
        tcp::MAX_HEADER_LEN
    };
    let walker = &mut scratch.walker;
    walker.reset();
    if !frame.load_tcp_header(offset, copy_len, &mut walker.header) {
        return Err(ParseError::TruncatedTcp);
    }
    let buf = &walker.header;
    let header_len = (buf[tcp::DATA_OFFSET] >> 4) as usize * 4;
    if header_len < tcp::MIN_HEADER_LEN || header_len > available {
        return Err(ParseError::BadTcpDataOffset);
    }
    let flags = TcpFlags(buf[tcp::FLAGS]);
    if !flags_are_valid(flags) {
        return Err(ParseError::BadTcpFlags);
    }
    scratch.segment = TcpSegment {
        src_port: be16(buf, tcp::SOURCE_PORT),
        dst_port: be16(buf, tcp::DESTINATION_PORT),
        seq: be32(buf, tcp::SEQ),
        ack: be32(buf, tcp::ACK),
        flags,
        window: be16(buf, tcp::WINDOW),
        header_len: header_len as u8,
        payload_len: (available - header_len) as u16,
        options: TcpOptions::default(),
    };
    let walker = &mut scratch.walker;
    walker.set_header_len(header_len);
    walker.walk();
    scratch.segment.options = walker.finish().map_err(|_| ParseError::BadTcpOptions)?;
    Ok(Transport {
        kind: TransportKind::Tcp,
        protocol: IPPROTO_TCP,
    })
}
