//! Lab tests of path MTU discovery through the guard: a link smaller than the endpoints'
//! own, on the clients' side, on the servers' side, and beyond the guard behind a real router
//! (the client namespace routing for a host of the test's own). Real kernel TCP on both ends
//! must learn the smaller MTU from the ICMP errors, in its own sequence numbers, and 100 MiB
//! must cross each way intact.
//! They need root and the synguard binary: run them through `cargo xtask test`.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::Command,
};

use support::{Guard, in_named_netns, new_lab, synguard_bin, transfer_both_ways};
use xtask::{
    cmd,
    lab::{
        CLIENT_ADDR, GUARD_CLIENT_IFACE, GUARD_CLIENT_SIDE_ADDR, GUARD_SERVER_IFACE, Host, Lab,
        PEER_IFACE, SERVER_ADDR,
    },
};

/// The protected port the tests' own servers listen on.
const PORT: u16 = 5000;
const SIZE: usize = 100 << 20;

fn guarded(lab: &Lab) -> Guard {
    let protect = format!("198.19.1.0/24:{PORT}");
    Guard::start(
        lab,
        "native",
        &["--protect", &protect, "--server-iface", GUARD_SERVER_IFACE],
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

/// The path MTU `netns`'s kernel has learned toward `to` (its route cache), if any.
fn learned_mtu(netns: &str, to: &str) -> Option<u16> {
    let out = cmd::stdout(Command::new("ip").args(["-n", netns, "route", "get", to])).unwrap();
    let mut words = out.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mtu" {
            return words.next().and_then(|mtu| mtu.parse().ok());
        }
    }
    None
}

#[test]
fn a_smaller_link_on_the_clients_side_is_discovered_by_the_server() {
    let lab = new_lab();
    link_mtu(&lab, GUARD_CLIENT_IFACE, Host::Client, 1400);
    // The client announces the MSS of a 1500-byte path, as one further away would: the
    // server's full-size segments meet the 1400-byte link at the guard.
    ip(
        &lab.netns(Host::Client),
        &[
            "route",
            "replace",
            "198.19.0.0/16",
            "via",
            GUARD_CLIENT_SIDE_ADDR,
            "advmss",
            "1460",
        ],
    );
    let guard = guarded(&lab);
    transfer_both_ways(&lab, &lab.netns(Host::Client), PORT, SIZE);
    guard.settle();
    assert!(
        guard.total("pass_too_big") > 0,
        "the server's full-size segments went to the kernel as sent: {}",
        guard.totals()
    );
    assert_eq!(
        learned_mtu(&lab.netns(Host::Server), CLIENT_ADDR),
        Some(1400),
        "the server learned the path MTU from the guard's kernel"
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_smaller_link_on_the_servers_side_is_discovered_by_the_client() {
    let lab = new_lab();
    link_mtu(&lab, GUARD_SERVER_IFACE, Host::Server, 1400);
    let guard = guarded(&lab);
    // Our SYN-ACK announces an MSS of 1460: the client's full-size segments meet the
    // 1400-byte link at the guard.
    transfer_both_ways(&lab, &lab.netns(Host::Client), PORT, SIZE);
    guard.settle();
    assert!(
        guard.total("pass_too_big") > 0,
        "the client's full-size segments went to the kernel as sent: {}",
        guard.totals()
    );
    assert_eq!(
        learned_mtu(&lab.netns(Host::Client), SERVER_ADDR),
        Some(1400),
        "the client learned the path MTU from the guard's kernel"
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

/// A host behind the client namespace, on a 1300-byte link: its own namespace, removed when
/// dropped (the test's, not the lab's, so it goes even if the test fails).
struct FarHost {
    netns: String,
}

const FAR_ADDR: &str = "198.18.2.2";
const NEAR_ADDR: &str = "198.18.2.1";

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
        for (netns, iface, addr) in [
            (client.as_str(), "to-far", NEAR_ADDR),
            (far.netns.as_str(), "to-near", FAR_ADDR),
        ] {
            ip(netns, &["addr", "add", &format!("{addr}/24"), "dev", iface]);
            ip(netns, &["link", "set", iface, "mtu", "1300", "up"]);
            cmd::output(
                Command::new("ip")
                    .args(["netns", "exec", netns, "ethtool", "-K", iface, "tx", "off"]),
            )
            .unwrap();
        }
        ip(&far.netns, &["link", "set", "lo", "up"]);
        // The far host announces the MSS of a 1500-byte path: the 1300-byte link lies
        // between it and the guard, where only the router before it can tell.
        ip(
            &far.netns,
            &[
                "route",
                "add",
                "198.19.0.0/16",
                "via",
                NEAR_ADDR,
                "advmss",
                "1460",
            ],
        );
        ip(&far.netns, &["route", "add", "blackhole", "default"]);
        ip(
            &lab.netns(Host::Guard),
            &["route", "add", "198.18.2.0/24", "via", CLIENT_ADDR],
        );
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
    // The client namespace, routing, sends "fragmentation needed" to the server, quoting the
    // segment as the guard forwarded it (our numbers); the guard must translate the quote.
    transfer_both_ways(&lab, &far.netns, PORT, SIZE);
    guard.settle();
    assert!(
        guard.total("icmp_translated") > 0,
        "the router's errors were translated: {}",
        guard.totals()
    );
    assert_eq!(
        learned_mtu(&lab.netns(Host::Server), FAR_ADDR),
        Some(1300),
        "the server learned the path MTU from the router beyond the guard"
    );
    // A forged error (its quoted sequence number far from anything in flight) drops at
    // the guard and teaches the server nothing.
    let before = guard.total("drop_icmp_out_of_window");
    send_forged_too_big(&lab, 1200);
    guard.settle();
    assert_eq!(guard.total("drop_icmp_out_of_window"), before + 1);
    assert_eq!(
        learned_mtu(&lab.netns(Host::Server), FAR_ADDR),
        Some(1300),
        "the forged MTU was not learned"
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

/// Sends, from the client namespace (the router), "fragmentation needed" with `mtu` quoting
/// a segment of an open flow from the server to the far host whose sequence number lies far
/// from anything in flight.
fn send_forged_too_big(lab: &Lab, mtu: u16) {
    use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io::{Read, Write};

    // An open flow to quote: connect from the far host and keep the connection.
    let listener = support::listen(lab, PORT);
    let mut client = support::connect_from(&format!("{}-far", lab.name), PORT);
    let mut served = support::accept(&listener);
    client.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    served.read_exact(&mut byte).unwrap();
    let far_port = client.local_addr().unwrap().port();

    let mut quoted = Vec::new();
    PacketBuilder::ipv4(
        SERVER_ADDR.parse::<Ipv4Addr>().unwrap().octets(),
        FAR_ADDR.parse::<Ipv4Addr>().unwrap().octets(),
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
        let to = SocketAddrV4::new(SERVER_ADDR.parse().unwrap(), 0);
        socket.send_to(&icmp, &to.into()).unwrap();
    });
    drop(served);
    drop(client);
}
