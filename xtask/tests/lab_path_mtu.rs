//! Lab tests of path MTU discovery through the guard, over IPv4 and IPv6: a link smaller
//! than the endpoints' own, on the clients' side, on the servers' side, and beyond the guard
//! behind a real router (the client namespace routing for a host of the test's own). Real
//! kernel TCP on both ends must learn the smaller MTU from the ICMP errors, in its own
//! sequence numbers, and 100 MiB must cross each way intact.
//! They need root and the synguard binary: run them through `cargo xtask test`.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
};

use support::{Guard, in_named_netns, new_lab, nstat, synguard_bin, transfer_both_ways};
use xtask::{
    cmd,
    lab::{
        CLIENT_ADDR, CLIENT_ADDR6, GUARD_CLIENT_IFACE, GUARD_CLIENT_SIDE_ADDR,
        GUARD_CLIENT_SIDE_ADDR6, GUARD_SERVER_IFACE, Host, Lab, PEER_IFACE, SERVER_ADDR,
        SERVER_ADDR6,
    },
};

/// The protected port the tests' own servers listen on.
const PORT: u16 = 5000;
const SIZE: usize = 100 << 20;

/// What differs between the two families here.
#[derive(Clone, Copy, Debug)]
struct Family {
    name: &'static str,
    /// `-4` or `-6`, for ip(8).
    flag: &'static str,
    server: &'static str,
    client: &'static str,
    guard_client_side: &'static str,
    /// The servers' prefix, as the client routes it.
    servers: &'static str,
    /// The smaller link: IPv6's minimum MTU for IPv6.
    small_mtu: u16,
    /// An MSS of a 1500-byte path.
    full_mss: u16,
    /// The far host and its router's address, on a link of `far_mtu`, and their prefix.
    far: &'static str,
    near: &'static str,
    far_prefix: &'static str,
    far_mtu: u16,
}

const V4: Family = Family {
    name: "IPv4",
    flag: "-4",
    server: SERVER_ADDR,
    client: CLIENT_ADDR,
    guard_client_side: GUARD_CLIENT_SIDE_ADDR,
    servers: "198.19.0.0/16",
    small_mtu: 1400,
    full_mss: 1460,
    far: "198.18.2.2",
    near: "198.18.2.1",
    far_prefix: "198.18.2.0/24",
    far_mtu: 1300,
};

const V6: Family = Family {
    name: "IPv6",
    flag: "-6",
    server: SERVER_ADDR6,
    client: CLIENT_ADDR6,
    guard_client_side: GUARD_CLIENT_SIDE_ADDR6,
    servers: "2001:db8:19::/48",
    small_mtu: 1280,
    full_mss: 1440,
    far: "2001:db8:18:2::2",
    near: "2001:db8:18:2::1",
    far_prefix: "2001:db8:18:2::/64",
    far_mtu: 1280,
};

impl Family {
    fn server_socket(&self) -> SocketAddr {
        SocketAddr::new(self.server.parse().unwrap(), PORT)
    }
}

fn guarded(lab: &Lab) -> Guard {
    let protect = format!("198.19.1.0/24:{PORT}");
    let protect6 = format!("[2001:db8:19:1::/64]:{PORT}");
    Guard::start(
        lab,
        "native",
        &[
            "--protect",
            &protect,
            "--protect",
            &protect6,
            "--server-iface",
            GUARD_SERVER_IFACE,
        ],
    )
}

fn ip(netns: &str, args: &[&str]) {
    cmd::output(Command::new("ip").args(["-n", netns]).args(args))
        .unwrap_or_else(|e| panic!("ip -n {netns} {args:?}: {e:#}"));
}

/// Sets both ends of a veth link to `mtu`.
fn link_mtu(lab: &Lab, guard_iface: &str, peer: Host, mtu: u16) {
    let mtu = mtu.to_string();
    ip(
        &lab.netns(Host::Guard),
        &["link", "set", "dev", guard_iface, "mtu", &mtu],
    );
    ip(
        &lab.netns(peer),
        &["link", "set", "dev", PEER_IFACE, "mtu", &mtu],
    );
}

fn learned_mtu(netns: &str, to: &str) -> Option<u16> {
    xtask::lab::learned_mtu(netns, to).unwrap()
}

/// The guard's and the client's link at the family's smaller MTU, the client announcing the
/// MSS of a 1500-byte path, as one further away would: the server's full-size segments meet
/// the smaller link at the guard.
fn smaller_link_on_the_clients_side(lab: &Lab, family: Family) {
    link_mtu(lab, GUARD_CLIENT_IFACE, Host::Client, family.small_mtu);
    ip(
        &lab.netns(Host::Client),
        &[
            family.flag,
            "route",
            "replace",
            family.servers,
            "via",
            family.guard_client_side,
            "advmss",
            &family.full_mss.to_string(),
        ],
    );
}

/// 100 MiB each way through the guard; then the guard must have handed the oversized
/// segments to the kernel as sent, and `sender`'s kernel must have learned the smaller MTU
/// toward `receiver`.
fn transfer_discovering_the_mtu(lab: &Lab, family: Family, sender: Host, receiver: &str) {
    let guard = guarded(lab);
    transfer_both_ways(lab, &lab.netns(Host::Client), family.server_socket(), SIZE);
    guard.settle();
    assert!(
        guard.total("pass_too_big") > 0,
        "{}: the {sender:?}'s full-size segments went to the kernel as sent: {}",
        family.name,
        guard.totals()
    );
    assert_eq!(
        learned_mtu(&lab.netns(sender), receiver),
        Some(family.small_mtu),
        "{}: the {sender:?} learned the path MTU from the guard's kernel",
        family.name
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_smaller_link_on_the_clients_side_is_discovered_by_the_server() {
    for family in [V4, V6] {
        let lab = new_lab();
        smaller_link_on_the_clients_side(&lab, family);
        transfer_discovering_the_mtu(&lab, family, Host::Server, family.client);
    }
}

#[test]
fn a_smaller_link_on_the_servers_side_is_discovered_by_the_client() {
    for family in [V4, V6] {
        let lab = new_lab();
        link_mtu(&lab, GUARD_SERVER_IFACE, Host::Server, family.small_mtu);
        // Our SYN-ACK announces the MSS of a 1500-byte path: the client's full-size segments
        // meet the smaller link at the guard.
        transfer_discovering_the_mtu(&lab, family, Host::Client, family.server);
    }
}

/// A host behind the client namespace, on a link smaller than the lab's (each family's
/// `far_mtu`): its own namespace, removed when dropped (the test's, not the lab's, so it goes
/// even if the test fails).
struct FarHost {
    netns: String,
}

impl FarHost {
    fn behind_client(lab: &Lab) -> FarHost {
        let far = FarHost {
            netns: format!("{}-far", lab.name),
        };
        cmd::output(Command::new("ip").args(["netns", "add", &far.netns])).unwrap();
        let client = lab.netns(Host::Client);
        ip(
            &client,
            &[
                "link", "add", "to-far", "type", "veth", "peer", "name", "to-near", "netns",
                &far.netns,
            ],
        );
        // Both families share the link, so it takes the smaller MTU of the two.
        let mtu = V4.far_mtu.min(V6.far_mtu).to_string();
        for (netns, iface) in [(client.as_str(), "to-far"), (far.netns.as_str(), "to-near")] {
            ip(netns, &["link", "set", iface, "mtu", &mtu, "up"]);
            cmd::output(
                Command::new("ip")
                    .args(["netns", "exec", netns, "ethtool", "-K", iface, "tx", "off"]),
            )
            .unwrap();
        }
        ip(&far.netns, &["link", "set", "lo", "up"]);
        for family in [V4, V6] {
            let length = if family.flag == "-4" { "24" } else { "64" };
            ip(
                &client,
                &[
                    family.flag,
                    "addr",
                    "add",
                    &format!("{}/{length}", family.near),
                    "dev",
                    "to-far",
                    "nodad",
                ],
            );
            ip(
                &far.netns,
                &[
                    family.flag,
                    "addr",
                    "add",
                    &format!("{}/{length}", family.far),
                    "dev",
                    "to-near",
                    "nodad",
                ],
            );
            // The far host announces the MSS of a 1500-byte path: the smaller link lies
            // between it and the guard, where only the router before it can tell.
            ip(
                &far.netns,
                &[
                    family.flag,
                    "route",
                    "add",
                    family.servers,
                    "via",
                    family.near,
                    "advmss",
                    &family.full_mss.to_string(),
                ],
            );
            ip(
                &far.netns,
                &[family.flag, "route", "add", "blackhole", "default"],
            );
            ip(
                &lab.netns(Host::Guard),
                &[
                    family.flag,
                    "route",
                    "add",
                    family.far_prefix,
                    "via",
                    family.client,
                ],
            );
        }
        lab.route_through_client(&synguard_bin()).unwrap();
        far
    }
}

impl Drop for FarHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn a_routers_error_beyond_the_guard_reaches_the_server_in_its_own_numbers() {
    let lab = new_lab();
    let far = FarHost::behind_client(&lab);
    let guard = guarded(&lab);
    let mut translated = 0;
    for family in [V4, V6] {
        // The client namespace, routing, sends "fragmentation needed" / "packet too big" to
        // the server, quoting the segment as the guard forwarded it (our numbers); the guard
        // must translate the quote.
        transfer_both_ways(&lab, &far.netns, family.server_socket(), SIZE);
        guard.settle();
        assert!(
            guard.total("icmp_translated") > translated,
            "{}: the router's errors were translated: {}",
            family.name,
            guard.totals()
        );
        translated = guard.total("icmp_translated");
        assert_eq!(
            learned_mtu(&lab.netns(Host::Server), family.far),
            Some(family.far_mtu.min(V6.far_mtu)),
            "{}: the server learned the path MTU from the router beyond the guard",
            family.name
        );
    }
    // A forged error (its quoted sequence number far from anything in flight) drops at
    // the guard and teaches the server nothing.
    let before = guard.total("drop_icmp_out_of_window");
    send_forged_too_big(&lab, &far, 1200);
    guard.settle();
    assert_eq!(guard.total("drop_icmp_out_of_window"), before + 1);
    assert_eq!(
        learned_mtu(&lab.netns(Host::Server), V4.far),
        Some(V4.far_mtu.min(V6.far_mtu)),
        "the forged MTU was not learned"
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

/// Sends, from the client namespace (the router), "fragmentation needed" with `mtu` quoting
/// a segment of an open IPv4 flow from the server to the far host whose sequence number lies far
/// from anything in flight.
fn send_forged_too_big(lab: &Lab, far: &FarHost, mtu: u16) {
    use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;

    // An open flow to quote: connect from the far host and keep the connection.
    let listener = support::listen(lab, PORT);
    let mut client = support::connect_to(&far.netns, V4.server_socket());
    let mut served = support::accept(&listener);
    client.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    served.read_exact(&mut byte).unwrap();
    let far_port = client.local_addr().unwrap().port();

    let mut quoted = Vec::new();
    PacketBuilder::ipv4(
        SERVER_ADDR.parse::<Ipv4Addr>().unwrap().octets(),
        V4.far.parse::<Ipv4Addr>().unwrap().octets(),
        63,
    )
    .tcp(PORT, far_port, 0x1234_5678, 1000)
    .ack(1)
    .write(&mut quoted, &[0; 1400])
    .unwrap();
    let mut message = Vec::new();
    PacketBuilder::ipv4([0; 4], [0; 4], 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ))
        .write(&mut message, &quoted[..576 - 28])
        .unwrap();
    let icmp = message[20..].to_vec();
    in_named_netns(&lab.netns(Host::Client), move || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        let to = SocketAddr::new(IpAddr::V4(SERVER_ADDR.parse().unwrap()), 0);
        socket.send_to(&icmp, &to.into()).unwrap();
    });
    drop(served);
    drop(client);
}

#[test]
fn segments_without_dont_fragment_are_fragmented_after_translation() {
    let lab = new_lab();
    smaller_link_on_the_clients_side(&lab, V4);
    // The server sends without DF (path MTU discovery off): routers fragment its segments.
    cmd::output(&mut lab.exec(
        Host::Server,
        "sysctl",
        ["-qw", "net.ipv4.ip_no_pmtu_disc=1"],
    ))
    .unwrap();
    let guard = guarded(&lab);
    let fragmented = nstat(&lab, Host::Guard, "IpFragCreates");
    transfer_both_ways(&lab, &lab.netns(Host::Client), V4.server_socket(), SIZE);
    guard.settle();
    assert!(
        nstat(&lab, Host::Guard, "IpFragCreates") > fragmented,
        "the guard's kernel fragmented the translated segments"
    );
    assert_eq!(
        guard.total("pass_too_big"),
        0,
        "nothing went untranslated: {}",
        guard.totals()
    );
    assert_eq!(learned_mtu(&lab.netns(Host::Server), V4.client), None);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}
