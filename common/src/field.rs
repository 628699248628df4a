//! Named offsets of the header fields the guard reads and writes, in one place (smoltcp's
//! `field` style): the parser, the translation and the segment writer name a field, never
//! its byte number. Each offset is from the start of its own header.

/// A big-endian 16-bit field at `at`.
#[inline(always)]
pub fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// A big-endian 32-bit field at `at`.
#[inline(always)]
pub fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Ethernet II (IEEE 802.3).
pub mod ethernet {
    pub const DESTINATION: usize = 0;
    pub const SOURCE: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const HEADER_LEN: usize = 14;
    pub const ETHERTYPE_IPV4: u16 = 0x0800;
    pub const ETHERTYPE_IPV6: u16 = 0x86dd;
    pub const ETHERTYPE_VLAN: u16 = 0x8100;
    pub const ETHERTYPE_QINQ: u16 = 0x88a8;
}

/// An 802.1Q / 802.1ad tag, after the addresses.
pub mod vlan {
    pub const TCI: usize = 0;
    /// The ethertype of what follows the tag.
    pub const ETHERTYPE: usize = 2;
    pub const TAG_LEN: usize = 4;
}

/// IPv4 (RFC 791 section 3.1).
pub mod ipv4 {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VERSION_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENTIFICATION: usize = 4;
    /// Flags (DF 0x4000, MF 0x2000) and the fragment offset (low 13 bits).
    pub const FLAGS_FRAGMENT: usize = 6;
    /// The don't-fragment bit of the `FLAGS_FRAGMENT` word.
    pub const DONT_FRAGMENT: u16 = 0x4000;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SOURCE: usize = 12;
    pub const DESTINATION: usize = 16;
    pub const MIN_HEADER_LEN: usize = 20;
}

/// IPv6 (RFC 8200 section 3).
pub mod ipv6 {
    /// Version (high nibble), traffic class and flow label.
    pub const VERSION_CLASS_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SOURCE: usize = 8;
    pub const DESTINATION: usize = 24;
    pub const HEADER_LEN: usize = 40;
}

/// An IPv6 extension header (RFC 8200 section 4).
pub mod ipv6_extension {
    pub const NEXT_HEADER: usize = 0;
    pub const LENGTH: usize = 1;
    /// Fragment header only: the offset (high 13 bits) and the M flag (bit 0).
    pub const FRAGMENT_OFFSET_FLAGS: usize = 2;
    pub const FRAGMENT_HEADER_LEN: usize = 8;
}

/// TCP (RFC 9293 section 3.1).
pub mod tcp {
    pub const SOURCE_PORT: usize = 0;
    pub const DESTINATION_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// The data offset in 32-bit words (high nibble).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const MIN_HEADER_LEN: usize = 20;
    pub const MAX_HEADER_LEN: usize = 60;
}

/// IANA protocol numbers.
pub const IPPROTO_TCP: u8 = 6;

/// ICMP (RFC 792) and ICMPv6 (RFC 4443): the same first eight bytes, then the quoted packet.
pub mod icmp {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// "Fragmentation needed": the next hop's MTU (RFC 1191 section 4).
    pub const NEXT_HOP_MTU: usize = 6;
    /// "Packet too big": the MTU (RFC 4443 section 3.2).
    pub const MTU: usize = 4;
    pub const HEADER_LEN: usize = 8;
    pub const IPPROTO_ICMP: u8 = 1;
    pub const IPPROTO_ICMPV6: u8 = 58;
}
