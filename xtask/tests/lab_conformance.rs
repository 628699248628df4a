//! Lab tests of TCP conformance through the guard's translation (RFC 5961, RFC 9293): segments
//! a client's own kernel would not send, crafted in the client's namespace against the real
//! server's kernel. The client must see exactly what a direct connection shows it: each case
//! runs once over plain routing and once through the guard, and the server's answers, read
//! in the client's own sequence space, must be the same.
//! They need root and the synguard binary: run them through `cargo xtask test`.

mod support;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use etherparse::{SlicedPacket, TcpHeader, TransportSlice};
use socket2::{Domain, Protocol, Socket, Type};
use support::{Guard, accept, connect, in_netns, listen, new_lab};
use xtask::lab::{CLIENT_ADDR, GUARD_SERVER_IFACE, Host, Lab, SERVER_ADDR};

const PORT: u16 = 5000;

/// A TCP segment seen on the client's link: who sent it, its numbers, flags and length.
#[derive(Clone, Copy, Debug)]
struct Seen {
    from_server: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    len: u32,
}

/// Every frame of the client's namespace (a packet socket), read for one connection.
struct Capture {
    socket: Socket,
    client_port: u16,
}

impl Capture {
    fn open(lab: &Lab, client_port: u16) -> Self {
        let socket = in_netns(lab, Host::Client, || {
            const ETH_P_ALL: u16 = 0x0003;
            Socket::new(
                Domain::PACKET,
                Type::RAW,
                Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
            )
            .unwrap()
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self {
            socket,
            client_port,
        }
    }

    /// The connection's segments until `until` (in the order they crossed the link).
    fn until(&self, until: Instant, mut stop: impl FnMut(&Seen) -> bool) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < until {
            let Ok(n) = (&self.socket).read(&mut buf) else {
                continue;
            };
            let Ok(packet) = SlicedPacket::from_ethernet(&buf[..n]) else {
                continue;
            };
            let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
                continue;
            };
            let from_server = match (tcp.source_port(), tcp.destination_port()) {
                (PORT, port) if port == self.client_port => true,
                (port, PORT) if port == self.client_port => false,
                _ => continue,
            };
            let flags = u8::from(tcp.fin())
                | u8::from(tcp.syn()) << 1
                | u8::from(tcp.rst()) << 2
                | u8::from(tcp.psh()) << 3
                | u8::from(tcp.ack()) << 4;
            let segment = Seen {
                from_server,
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                flags,
                len: tcp.payload().len() as u32,
            };
            seen.push(segment);
            if stop(&segment) {
                break;
            }
        }
        seen
    }
}

/// A crafted segment the client's kernel did not write.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// A RST inside the server's window but not at its next sequence number (RFC 5961 3.2:
    /// a challenge ACK, the connection lives).
    InexactRst,
    /// A SYN on the established connection (RFC 5961 4.2: a challenge ACK).
    SynOnEstablished,
    /// A SYN-ACK on it (an old one, replayed).
    OldSynAck,
    /// An ACK of data the server never sent (RFC 5961 5.2).
    AckOfUnsentData,
    /// An ACK below what the server's window remembers (RFC 5961 5.2).
    AckTooOld,
}

const CASES: [Case; 5] = [
    Case::InexactRst,
    Case::SynOnEstablished,
    Case::OldSynAck,
    Case::AckOfUnsentData,
    Case::AckTooOld,
];

/// What the client saw from the server after the crafted segment, each answer's numbers
/// relative to the client's own (what it expects next, what it sent next).
type Answer = Vec<(u8, i64, i64, u32)>;

/// Opens a connection, learns its numbers from the link, sends each crafted case in turn,
/// and returns the server's answers to each; the connection must carry data afterwards.
fn run_cases(lab: &Lab) -> Vec<Answer> {
    let listener = listen(lab, PORT);
    let mut client = connect(lab, PORT);
    let mut server = accept(&listener);
    let client_port = client.local_addr().unwrap().port();
    let capture = Capture::open(lab, client_port);
    client.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).unwrap();
    server.write_all(b"y").unwrap();
    client.read_exact(&mut byte).unwrap();
    // The client's data and the server's, as they crossed the client's link.
    let (mut snd_nxt, mut rcv_nxt) = (None, None);
    capture.until(Instant::now() + Duration::from_secs(5), |seen| {
        match (seen.from_server, seen.len) {
            (false, 1) => snd_nxt = Some(seen.seq.wrapping_add(1)),
            (true, 1) => rcv_nxt = Some(seen.seq.wrapping_add(1)),
            _ => {}
        }
        snd_nxt.is_some() && rcv_nxt.is_some()
    });
    let (snd_nxt, rcv_nxt) = (
        snd_nxt.expect("the client's byte"),
        rcv_nxt.expect("the server's"),
    );
    let mut answers = Vec::new();
    for case in CASES {
        let (seq, ack, flags) = match case {
            Case::InexactRst => (snd_nxt.wrapping_add(1), 0, 0x04),
            Case::SynOnEstablished => (snd_nxt.wrapping_add(1000), 0, 0x02),
            Case::OldSynAck => (snd_nxt.wrapping_sub(2), rcv_nxt.wrapping_sub(1), 0x12),
            Case::AckOfUnsentData => (snd_nxt, rcv_nxt.wrapping_add(1_000_000), 0x10),
            Case::AckTooOld => (snd_nxt, rcv_nxt.wrapping_sub(1 << 30), 0x10),
        };
        inject(lab, client_port, seq, ack, flags);
        let seen = capture.until(Instant::now() + Duration::from_secs(1), |_| false);
        answers.push(
            seen.iter()
                .filter(|s| s.from_server)
                .map(|s| {
                    (
                        s.flags,
                        i64::from(s.seq.wrapping_sub(rcv_nxt) as i32),
                        i64::from(s.ack.wrapping_sub(snd_nxt) as i32),
                        s.len,
                    )
                })
                .collect(),
        );
    }
    // None of it broke the connection.
    client.write_all(b"z").unwrap();
    server.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"z");
    server.write_all(b"w").unwrap();
    client.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"w");
    answers
}

/// Sends a bare TCP segment from the client's address and `client_port` to the server (a raw
/// socket: the client's kernel knows nothing of it).
fn inject(lab: &Lab, client_port: u16, seq: u32, ack: u32, flags: u8) {
    let mut tcp = TcpHeader::new(client_port, PORT, seq, 502);
    tcp.fin = flags & 0x01 != 0;
    tcp.syn = flags & 0x02 != 0;
    tcp.rst = flags & 0x04 != 0;
    tcp.ack = flags & 0x10 != 0;
    tcp.acknowledgment_number = ack;
    let (client, server): (Ipv4Addr, Ipv4Addr) =
        (CLIENT_ADDR.parse().unwrap(), SERVER_ADDR.parse().unwrap());
    tcp.checksum = tcp
        .calc_checksum_ipv4_raw(client.octets(), server.octets(), &[])
        .unwrap();
    let bytes = tcp.to_bytes();
    in_netns(lab, Host::Client, move || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).unwrap();
        let to = SocketAddr::new(IpAddr::V4(server), 0);
        socket.send_to(&bytes, &to.into()).unwrap();
    });
}

#[test]
fn crafted_segments_get_the_answers_a_direct_connection_gets() {
    let lab = new_lab();
    let direct = run_cases(&lab);
    let protect = format!("198.19.1.0/24:{PORT}");
    let guard = Guard::start(
        &lab,
        "native",
        &["--protect", &protect, "--server-iface", GUARD_SERVER_IFACE],
    );
    let through = run_cases(&lab);
    eprintln!(
        "answers (flags, seq and ack from the client's next, length): direct {direct:?}, through the guard {through:?}"
    );
    for (case, (direct, through)) in CASES.iter().zip(direct.iter().zip(&through)) {
        assert_eq!(
            through, direct,
            "{case:?}: through the guard (left) as directly (right)"
        );
    }
    // The RFCs' answer to each, as the real kernel gave it directly: one bare (challenge) ACK
    // at exactly the client's own next numbers, the crafted segment otherwise ignored.
    for (case, answer) in CASES.iter().zip(&direct) {
        assert_eq!(answer, &[(0x10, 0, 0, 0)], "{case:?}");
    }
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}
