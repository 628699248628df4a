//! Lab tests of validated flows: real kernel TCP on both ends, joined through the guard's
//! cookies, forwarded with sequence translation, tracked by the controller's state machine.
//! They need root and the synguard binary: run them through `cargo xtask test`.

mod support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Guard, accept, connect, connect_to, digest, in_netns, listen, listen_on, new_lab, nstat,
    pattern, read_all, server_addr, synguard_bin, transfer_both_ways, wait_for,
};
use xtask::{
    cmd,
    lab::{GUARD_SERVER_IFACE, Host, Lab, PEER_IFACE, SERVER_ADDR, SERVER_ADDR6},
    lab_server::BODY,
};

/// The protected port the tests' own servers listen on (80 is the lab's HTTP server).
const PORT: u16 = 5000;
/// A protected address in the server's subnet that no host holds.
const SILENT_SERVER: &str = "198.19.1.77:5000";
/// A short MSL, so TIME-WAIT ends within the test.
const MSL_SECONDS: f64 = 1.0;

fn guarded(lab: &Lab, extra: &[&str]) -> Guard {
    let protect = format!("198.19.1.0/24:80,{PORT},{}", PORT + 1);
    let protect6 = format!("[2001:db8:19:1::/64]:80,{PORT},{}", PORT + 1);
    let msl = MSL_SECONDS.to_string();
    let mut args = vec![
        "--protect",
        &protect,
        "--protect",
        &protect6,
        "--server-iface",
        GUARD_SERVER_IFACE,
        "--msl",
        &msl,
    ];
    args.extend_from_slice(extra);
    Guard::start(lab, "native", &args)
}

/// The server's address at `port` in each family the lab carries: IPv4, then IPv6.
fn server_addrs(port: u16) -> [SocketAddr; 2] {
    [
        server_addr(port),
        SocketAddr::new(SERVER_ADDR6.parse().unwrap(), port),
    ]
}

/// The running guard's answer to `synguard status|flows --json`.
fn ask(lab: &Lab, what: &str) -> Value {
    let bin = synguard_bin();
    let out = cmd::stdout(&mut lab.exec(Host::Guard, bin.to_str().unwrap(), [what, "--json"]))
        .unwrap_or_else(|e| panic!("synguard {what}: {e:#}"));
    serde_json::from_str(&out).unwrap()
}

fn flow_count(lab: &Lab) -> u64 {
    ask(lab, "status")["flows"]["total"].as_u64().unwrap()
}

fn state_count(lab: &Lab, state: &str) -> u64 {
    ask(lab, "status")["flows"]["states"][state]
        .as_u64()
        .unwrap()
}

fn count(lab: &Lab, name: &str) -> u64 {
    ask(lab, "status")["flows"]["counts"][name]
        .as_u64()
        .unwrap()
}

/// Waits until the guard holds no flow; the time it took.
fn wait_until_no_flows(lab: &Lab, limit: Duration) -> Duration {
    let started = Instant::now();
    wait_for("the flow table to empty", limit, || flow_count(lab) == 0);
    started.elapsed()
}

#[test]
fn http_and_100_mib_each_way_arrive_intact() {
    let lab = new_lab();
    let guard = guarded(&lab, &[]);
    const SIZE: usize = 100 << 20;
    for (host, server) in [SERVER_ADDR, &format!("[{SERVER_ADDR6}]")]
        .into_iter()
        .zip(server_addrs(PORT))
    {
        let page = cmd::stdout(&mut lab.exec(
            Host::Client,
            "curl",
            ["-sSg", "--max-time", "5", &format!("http://{host}/")],
        ))
        .unwrap();
        assert_eq!(page, BODY, "HTTP through the guard to {host}");
        transfer_both_ways(&lab, &lab.netns(Host::Client), server, SIZE);
    }
    // A page and a transfer each way, per family.
    assert_eq!(
        (count(&lab, "validated"), count(&lab, "joined")),
        (6, 6),
        "{}",
        ask(&lab, "status")
    );
    let limit = Duration::from_secs_f64(2.0 * MSL_SECONDS + 2.0);
    wait_until_no_flows(&lab, limit);
    wait_for(
        "the counters to show the traffic",
        Duration::from_secs(5),
        || {
            guard.total("forward_to_client") > (2 * SIZE / 1500) as u64
                && guard.total("forward_to_server") > (2 * SIZE / 1500) as u64
        },
    );
    assert_eq!(guard.total("backend_joined"), 6);
    // Forwarded frames go straight to their next hop (XDP_REDIRECT); the kernel routes only
    // those whose neighbour it has not resolved yet.
    assert!(
        guard.total("redirected") > (2 * SIZE / 1500) as u64,
        "forwarded by XDP_REDIRECT: {}",
        guard.totals()
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn every_way_of_closing_is_tracked_and_ends_the_flow() {
    let lab = new_lab();
    let guard = guarded(&lab, &[]);
    let two_msl = Duration::from_secs_f64(2.0 * MSL_SECONDS);
    for server in server_addrs(PORT) {
        every_way_of_closing(&lab, server, two_msl);
    }
    // Each family: the half-close, the server's close, the simultaneous close, the RST.
    assert_eq!(count(&lab, "closed"), 8, "{}", ask(&lab, "status"));
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

fn every_way_of_closing(lab: &Lab, server: SocketAddr, two_msl: Duration) {
    let listener = listen_on(lab, server);
    let connect = || connect_to(&lab.netns(Host::Client), server);

    // Half-close: the client shuts its write side; the server keeps sending 10 MiB.
    let mut client = connect();
    let mut server = accept(&listener);
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut server), b"request");
    wait_for("CLOSE-WAIT", Duration::from_secs(5), || {
        state_count(lab, "CLOSE-WAIT") == 1
    });
    let body = pattern(10 << 20, 3);
    let sent = body.clone();
    let sender = thread::spawn(move || {
        server.write_all(&sent).unwrap();
        // The server closes: LAST-ACK, then CLOSED on the client's ACK.
    });
    assert_eq!(
        digest(&read_all(&mut client)),
        digest(&body),
        "half-close data"
    );
    sender.join().unwrap();
    drop(client);
    wait_until_no_flows(lab, Duration::from_secs(2));

    // The server closes first: FIN-WAIT-2 while the client has not closed, then TIME-WAIT,
    // which ends after 2*MSL.
    let mut client = connect();
    let server = accept(&listener);
    drop(server);
    assert!(read_all(&mut client).is_empty());
    wait_for("FIN-WAIT-2", Duration::from_secs(5), || {
        state_count(lab, "FIN-WAIT-2") == 1
    });
    drop(client);
    wait_for("TIME-WAIT", Duration::from_secs(5), || {
        state_count(lab, "TIME-WAIT") == 1
    });
    let waited = wait_until_no_flows(lab, two_msl + Duration::from_secs(2));
    assert!(
        waited + Duration::from_millis(300) >= two_msl,
        "TIME-WAIT lasted {waited:?}, less than 2*MSL"
    );

    // Simultaneous close: both ends shut down at once.
    let mut client = connect();
    let mut server = accept(&listener);
    let barrier = Arc::new(Barrier::new(2));
    let other = Arc::clone(&barrier);
    let closer = thread::spawn(move || {
        other.wait();
        server.shutdown(Shutdown::Write).unwrap();
        read_all(&mut server)
    });
    barrier.wait();
    client.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&mut client).is_empty());
    assert!(closer.join().unwrap().is_empty());
    drop(client);
    wait_until_no_flows(lab, two_msl + Duration::from_secs(2));

    // RST mid-stream: the client aborts while the server sends.
    let client = connect();
    let mut server = accept(&listener);
    let sender = thread::spawn(move || {
        let chunk = pattern(1 << 16, 4);
        loop {
            if let Err(error) = server.write_all(&chunk) {
                return error.kind();
            }
        }
    });
    thread::sleep(Duration::from_millis(100)); // let data flow (not a synchronisation)
    socket2_linger_zero(&client);
    drop(client); // with SO_LINGER 0: a RST
    let kind = sender.join().unwrap();
    assert!(
        matches!(kind, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "the server saw {kind:?}"
    );
    wait_until_no_flows(lab, Duration::from_secs(2));
}

fn socket2_linger_zero(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

#[test]
fn a_thousand_concurrent_connections() {
    raise_fd_limit(8192);
    let lab = new_lab();
    let guard = guarded(&lab, &[]);
    let listener = listen(&lab, PORT);
    const N: usize = 1000;
    // Each server connection echoes the 4 bytes its client sent first (clients speak first,
    // as real ones do: a final ACK the server's full accept queue dropped is then made good
    // by the data segment, with or without a guard in between).
    let echoer = thread::spawn(move || {
        (0..N)
            .map(|_| {
                let mut server = accept(&listener);
                let mut got = [0u8; 4];
                server.read_exact(&mut got).map(|_| {
                    server.write_all(&got).unwrap();
                    server
                })
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let clients: Vec<TcpStream> = in_netns(&lab, Host::Client, || {
        (0..N as u32)
            .map(|i| {
                let mut client =
                    TcpStream::connect_timeout(&server_addr(PORT), Duration::from_secs(5)).unwrap();
                client.write_all(&i.to_be_bytes()).unwrap();
                client
            })
            .collect()
    });
    let servers = match echoer.join() {
        Ok(Ok(servers)) => servers,
        other => panic!(
            "not every connection reached the server ({other:?}): {}",
            ask(&lab, "status")
        ),
    };
    for (i, client) in clients.iter().enumerate() {
        let mut echo = [0u8; 4];
        (&*client).read_exact(&mut echo).unwrap();
        assert_eq!(echo, (i as u32).to_be_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_count(&lab, "ESTAB") != N as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        state_count(&lab, "ESTAB"),
        N as u64,
        "{}",
        ask(&lab, "status")
    );
    assert_eq!(
        ask(&lab, "flows")["flows"].as_array().unwrap().len(),
        N,
        "synguard flows lists them all"
    );
    // The data plane marked every flow in the filter in front of its flows map (a few share
    // a slot: 1,000 flows in 131,072 slots; earlier connections of the test may add some).
    let filter = &ask(&lab, "status")["flows"]["filter"];
    let marked = filter["marked"].as_u64().unwrap();
    assert!(
        (N as u64 - 20..=N as u64 + 100).contains(&marked),
        "{filter}"
    );
    drop(clients);
    drop(servers);
    wait_until_no_flows(&lab, Duration::from_secs_f64(2.0 * MSL_SECONDS + 5.0));
    assert!(guard.total("cookie_valid") >= N as u64);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

fn raise_fd_limit(to: u64) {
    let limit = libc::rlimit {
        rlim_cur: to,
        rlim_max: to,
    };
    // SAFETY: setrlimit with a struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

#[test]
fn sack_blocks_are_translated_under_loss() {
    let lab = new_lab();
    let guard = guarded(&lab, &[]);
    // Loss on the way to the client (about 2%, made by the client's peer program: this
    // kernel has no netem): the client's ACKs then carry SACK blocks, which the guard must
    // shift into the server's sequence space.
    lab.set_client_loss(&synguard_bin(), 50).unwrap();
    let discarded_before = nstat(&lab, Host::Server, "TcpExtTCPSACKDiscard");
    let recovered_before = nstat(&lab, Host::Server, "TcpExtTCPSackRecovery");
    let listener = listen(&lab, PORT);
    const SIZE: usize = 20 << 20;
    let server = thread::spawn(move || {
        let mut stream = accept(&listener);
        stream.write_all(&pattern(SIZE, 5)).unwrap();
    });
    let mut client = connect(&lab, PORT);
    assert_eq!(digest(&read_all(&mut client)), digest(&pattern(SIZE, 5)));
    server.join().unwrap();
    let recovered = nstat(&lab, Host::Server, "TcpExtTCPSackRecovery") - recovered_before;
    let discarded = nstat(&lab, Host::Server, "TcpExtTCPSACKDiscard") - discarded_before;
    assert!(
        recovered > 0,
        "the server recovered with SACK {recovered} times"
    );
    assert_eq!(
        discarded, 0,
        "the server discarded SACK blocks: translation is off"
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

/// What the guard has sent the server so far (forwarded segments, the SYNs its validated
/// cookies became, its own ACKs and RSTs in the clients' name), read from its maps now.
fn forwarded_to_server(lab: &Lab) -> u64 {
    let stats = ask(lab, "stats");
    [
        "forward_to_server",
        "cookie_valid",
        "tx_backend_ack",
        "tx_reset_forgotten",
    ]
    .iter()
    .map(|counter| {
        stats["total"][counter]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {counter} in {stats}"))
    })
    .sum()
}

/// Packets the server's interface received so far.
fn server_rx_packets(lab: &Lab) -> u64 {
    let out = cmd::stdout(&mut lab.exec(
        Host::Server,
        "cat",
        [format!("/sys/class/net/{PEER_IFACE}/statistics/rx_packets")],
    ))
    .unwrap();
    out.trim().parse().unwrap()
}

fn flood(lab: &Lab, flag: &str, extra: &[&str]) {
    // Bounded in time; hping3's exit status under `timeout` is not ours to judge.
    let mut args = vec!["2", "hping3", flag, "--flood", "-p", "5000"];
    args.extend_from_slice(extra);
    args.push(SERVER_ADDR);
    let _ = lab
        .exec(Host::Client, "timeout", args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[test]
fn ack_and_rst_floods_reach_neither_the_server_nor_live_flows() {
    let lab = new_lab();
    // The floods come from the live flow's own address: the policy stays out of it, so the
    // data plane alone is what this test sees (the policy's own tests are in policy.rs).
    let guard = guarded(
        &lab,
        &[
            "--max-out-of-state-rate",
            "0",
            "--max-invalid-ack-rate",
            "0",
        ],
    );
    let listener = listen(&lab, PORT);
    // A live flow that keeps sending through the floods.
    let server = thread::spawn(move || {
        let mut stream = accept(&listener);
        let chunk = pattern(1 << 16, 6);
        let mut sent = 0u64;
        while stream.write_all(&chunk).is_ok() {
            sent += chunk.len() as u64;
            thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    let mut client = connect(&lab, PORT);
    let client_port = client.local_addr().unwrap().port().to_string();
    // The live flow reads until the floods are over and counted.
    let floods_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = thread::spawn({
        let floods_done = Arc::clone(&floods_done);
        move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            while !floods_done.load(std::sync::atomic::Ordering::Relaxed) {
                total += client.read(&mut buf).expect("the live flow survives") as u64;
            }
            total
        }
    });
    wait_for(
        "the live flow to carry data",
        Duration::from_secs(5),
        || guard.total("forward_to_client") > 100,
    );
    let forwarded_before = forwarded_to_server(&lab);
    let rx_before = server_rx_packets(&lab);
    flood(&lab, "-A", &["--rand-source"]);
    flood(&lab, "-R", &[]);
    flood(&lab, "-F", &["-A"]);
    // Blind RSTs aimed at the live flow's own 4-tuple, with guessed sequence numbers.
    flood(&lab, "-R", &["-s", &client_port, "-k"]);
    // hping3's rate depends on the machine's load: a hundred of each proves the kind. The
    // ACK flood's fixed ack number reads as a forged or an expired cookie depending on the
    // time counter (it steps every 64 s), so the two count together.
    let counts = || {
        [
            guard.total("drop_cookie_invalid") + guard.total("drop_cookie_expired"),
            guard.total("drop_stray_rst"),
            guard.total("drop_stray_fin"),
            guard.total("drop_rst_out_of_window"),
        ]
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts().iter().any(|count| *count <= 100) {
        assert!(
            Instant::now() < deadline,
            "the floods' counters (bad cookie, stray RST, stray FIN, blind RST): {:?}, all: {}",
            counts(),
            guard.totals()
        );
        thread::sleep(Duration::from_millis(50));
    }
    floods_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let received = reader.join().unwrap();
    assert!(
        received > 1 << 20,
        "the live flow kept flowing ({received} bytes)"
    );
    // The guard's counts are read fresh from its maps, after the link's at the end and
    // before it at the start, so every packet the link counted in between was counted by the
    // guard in between too (a counter line is up to an interval old, and the live flow's
    // ACKs alone are thousands in that time).
    let rx = server_rx_packets(&lab) - rx_before;
    let forwarded = forwarded_to_server(&lab) - forwarded_before;
    // Everything the server received is what the guard forwarded, plus a trickle the guard's
    // own stack sends (neighbour discovery, ARP, our ACKs: a few per second): none of the
    // floods' 1.5 million packets.
    assert!(
        rx <= forwarded + 200,
        "the server received {rx} packets, the guard forwarded {forwarded}: {}",
        guard.totals()
    );
    drop(server);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn refusing_and_silent_servers_get_the_client_reset() {
    let lab = new_lab();
    let guard = guarded(&lab, &["--backend-timeout", "1"]);
    // Nothing listens on PORT + 1: the server's RST makes the guard reset the client. The
    // reset can beat the end of connect(2) itself (the guard answers the SYN, the server
    // refuses at once): either way the client sees the reset.
    let refused = in_netns(&lab, Host::Client, || {
        TcpStream::connect_timeout(&server_addr(PORT + 1), Duration::from_secs(5))
    });
    let mut buf = [0u8; 1];
    let error = match refused {
        Err(error) => error,
        Ok(mut stream) => {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream.read(&mut buf).expect_err("a reset")
        }
    };
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(count(&lab, "backend_refused"), 1);

    // A server that never answers (an address nobody holds): after --backend-timeout the
    // client is reset.
    let mut silent = in_netns(&lab, Host::Client, || {
        TcpStream::connect_timeout(&SILENT_SERVER.parse().unwrap(), Duration::from_secs(5))
            .expect("the guard answers for the silent server")
    });
    let started = Instant::now();
    let error = silent.read(&mut buf).expect_err("a reset");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&lab, "backend_timeouts"), 1);
    assert_eq!(flow_count(&lab), 0);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

/// Runs `nft` in the server's namespace.
fn server_nft(lab: &Lab, rule: &str) {
    cmd::stdout(&mut lab.exec(Host::Server, "nft", rule.split_whitespace()))
        .unwrap_or_else(|e| panic!("nft {rule}: {e:#}"));
}

#[test]
fn a_request_sent_before_the_server_answers_is_held_and_delivered() {
    let lab = new_lab();
    let guard = guarded(&lab, &[]);
    const SIZE: usize = 1000;
    // With the client's timestamps (the controller translates its TSecr), then without.
    for (round, sysctl) in [None, Some("net.ipv4.tcp_timestamps=0")]
        .into_iter()
        .enumerate()
    {
        if let Some(sysctl) = sysctl {
            cmd::output(&mut lab.exec(Host::Client, "sysctl", ["-qw", sysctl])).unwrap();
        }
        let held_before = count(&lab, "early_data_held");
        // The server drops SYNs for now: the guard's SYN goes unanswered, so the client's
        // request surely comes before the join.
        server_nft(&lab, "add table inet hold");
        server_nft(
            &lab,
            "add chain inet hold input { type filter hook input priority 0 ; }",
        );
        server_nft(
            &lab,
            &format!("add rule inet hold input tcp dport {PORT} tcp flags syn drop"),
        );
        let listener = listen(&lab, PORT);
        let server = thread::spawn(move || {
            let mut stream = accept(&listener);
            let mut request = vec![0; SIZE];
            stream.read_exact(&mut request).unwrap();
            stream.write_all(&request).unwrap();
        });
        let mut client = connect(&lab, PORT);
        let request = pattern(SIZE, 3 + round as u64);
        client.write_all(&request).unwrap();
        wait_for(
            "the guard to hold the request",
            Duration::from_secs(5),
            || count(&lab, "early_data_held") > held_before,
        );
        server_nft(&lab, "delete table inet hold");
        // The guard's next SYN gets through; the request follows the join.
        let mut echo = vec![0; SIZE];
        client.read_exact(&mut echo).unwrap();
        assert!(
            echo == request,
            "round {round}: the server got the request intact"
        );
        server.join().unwrap();
        assert_eq!(
            count(&lab, "early_data_sent"),
            count(&lab, "early_data_held"),
            "round {round}: every held segment was sent on"
        );
    }
    assert!(count(&lab, "syn_retransmits") >= 2);
    wait_for(
        "the data plane's count of held segments",
        Duration::from_secs(5),
        || guard.total("early_data_held") >= 2,
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn an_idle_flow_is_reset_at_both_ends_and_keepalive_keeps_another_alive() {
    let lab = new_lab();
    let guard = guarded(&lab, &["--idle-timeout", "established=3"]);
    let listener = listen(&lab, PORT);
    let open = |keepalive: bool| {
        let mut client = connect(&lab, PORT);
        if keepalive {
            // Probes every second after a second of silence (Linux's defaults: 2 hours, 75 s).
            let probes = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(1))
                .with_interval(Duration::from_secs(1));
            socket2::SockRef::from(&client)
                .set_tcp_keepalive(&probes)
                .unwrap();
        }
        let mut server = accept(&listener);
        client.write_all(b"hello").unwrap();
        let mut greeting = [0u8; 5];
        server.read_exact(&mut greeting).unwrap();
        (client, server)
    };
    let (mut kept, mut kept_server) = open(true);
    let (mut silent, mut silent_server) = open(false);
    // Silent for 3 s: the guard resets both ends (a blocking read ends with the reset).
    for (end, stream) in [("client", &mut silent), ("server", &mut silent_server)] {
        let mut byte = [0u8; 1];
        let error = stream
            .read(&mut byte)
            .expect_err("the idle flow must end in a reset, not data or EOF");
        assert_eq!(
            error.kind(),
            ErrorKind::ConnectionReset,
            "the {end} was reset: {error}"
        );
    }
    assert_eq!(count(&lab, "idle_timeouts"), 1, "only the silent flow");
    // The probed one crossed the same silence, and carries data still.
    kept.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    kept_server.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");
    assert_eq!(count(&lab, "idle_timeouts"), 1);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_connection_older_than_the_guard_is_reset_when_its_server_speaks() {
    let lab = new_lab();
    // Opened through plain routing, before the guard came: the guard never validated it.
    let listener = listen(&lab, PORT);
    let mut client = connect(&lab, PORT);
    let mut server = accept(&listener);
    client.write_all(b"hi").unwrap();
    let mut greeting = [0u8; 2];
    server.read_exact(&mut greeting).unwrap();
    let guard = guarded(&lab, &[]);
    // The server speaks on it: the guard answers with the RST the client's end would send
    // for a connection it does not know, and the server's end closes.
    server.write_all(b"late").unwrap();
    let mut byte = [0u8; 1];
    let error = server
        .read(&mut byte)
        .expect_err("the server's end must be reset");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    guard.settle();
    assert!(guard.total("tx_reset_forgotten") >= 1, "{}", guard.totals());
    drop(client);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_flow_evicted_from_a_full_table_is_reset_at_both_ends_when_either_speaks() {
    raise_fd_limit(8192);
    let lab = new_lab();
    const MAX_FLOWS: usize = 1024;
    let max_flows = MAX_FLOWS.to_string();
    let guard = guarded(&lab, &["--max-flows", &max_flows]);
    let listener = listen(&lab, PORT);
    let open = || {
        let mut client = connect(&lab, PORT);
        let mut server = accept(&listener);
        client.write_all(b"hi").unwrap();
        let mut greeting = [0u8; 2];
        server.read_exact(&mut greeting).unwrap();
        (client, server)
    };
    // Two flows fall silent, the oldest in the table: the client of one speaks next, the
    // server of the other.
    let (mut client_speaks, mut its_server) = open();
    // A flow that keeps talking through it all: the table's least recently used go first.
    let (mut busy, mut busy_server) = open();
    let (mut its_client, mut server_speaks) = open();
    let listed = |stream: &TcpStream| {
        let client = stream.local_addr().unwrap().to_string();
        ask(&lab, "flows")["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["client"] == client.as_str())
    };
    // Connections kept open, silent (no segment of theirs may meet a forgotten flow while
    // the test counts), until the data plane's map, full, evicts both.
    let mut fillers = Vec::new();
    while listed(&client_speaks) || listed(&its_client) {
        assert!(
            fillers.len() < 3 * MAX_FLOWS,
            "{} more flows than the table holds evicted neither silent flow: {}",
            fillers.len(),
            ask(&lab, "status")
        );
        for _ in 0..256 {
            fillers.push((connect(&lab, PORT), accept(&listener)));
        }
        let mut echo = [0u8; 2];
        busy.write_all(b"up").unwrap();
        busy_server.read_exact(&mut echo).unwrap();
        busy_server.write_all(&echo).unwrap();
        busy.read_exact(&mut echo).unwrap();
        guard.settle();
    }
    assert!(count(&lab, "evicted") >= 2, "{}", ask(&lab, "status"));
    assert!(listed(&busy), "the busy flow kept its place");
    let expect_reset = |stream: &mut TcpStream, end: &str| {
        let mut byte = [0u8; 1];
        let error = stream
            .read(&mut byte)
            .expect_err("a forgotten flow must end in a reset, not data or EOF");
        assert_eq!(
            error.kind(),
            ErrorKind::ConnectionReset,
            "the {end} was reset: {error}"
        );
    };
    client_speaks.write_all(b"late").unwrap();
    expect_reset(&mut client_speaks, "client that spoke");
    expect_reset(&mut its_server, "server of the client that spoke");
    server_speaks.write_all(b"late").unwrap();
    expect_reset(&mut server_speaks, "server that spoke");
    expect_reset(&mut its_client, "client of the server that spoke");
    assert_eq!(count(&lab, "forgotten_reset"), 2, "{}", ask(&lab, "status"));
    guard.settle();
    assert_eq!(guard.total("tx_reset_forgotten"), 2, "{}", guard.totals());
    let payload = pattern(64 << 10, 9); // within the socket buffers: written, then read
    busy.write_all(&payload).unwrap();
    let mut got = vec![0u8; payload.len()];
    busy_server.read_exact(&mut got).unwrap();
    assert_eq!(
        digest(&got),
        digest(&payload),
        "the busy flow still carries data"
    );
    drop(fillers);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn an_ipv6_client_sending_extension_headers_connects_through_the_guard() {
    let lab = new_lab();
    let guard = guarded(&lab, &[]);
    // The server counts the segments that reach it with a destination options header.
    server_nft(&lab, "add table ip6 seen");
    server_nft(
        &lab,
        "add chain ip6 seen input { type filter hook input priority 0 ; }",
    );
    server_nft(&lab, "add rule ip6 seen input exthdr dst exists counter");
    let server = server_addrs(PORT)[1];
    let listener = listen_on(&lab, server);
    // Every segment of the client's connection, its SYN and third ACK included, carries an
    // 8-byte destination options header (a PadN option), set on the socket before connect.
    let mut client = in_netns(&lab, Host::Client, move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        let options: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: setsockopt with a buffer of the length passed.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IPV6,
                libc::IPV6_DSTOPTS,
                options.as_ptr().cast(),
                options.len() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
        socket
            .connect_timeout(&server.into(), Duration::from_secs(5))
            .expect("connecting through the guard");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    });
    let mut served = accept(&listener);
    let request = pattern(100_000, 5);
    client.write_all(&request).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(digest(&read_all(&mut served)), digest(&request));
    served.write_all(b"done").unwrap();
    drop(served);
    assert_eq!(read_all(&mut client), b"done");
    let rules =
        cmd::stdout(&mut lab.exec(Host::Server, "nft", ["list", "table", "ip6", "seen"])).unwrap();
    let packets: u64 = rules
        .split_whitespace()
        .skip_while(|word| *word != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {rules}"));
    // The guard writes the SYN to the server itself; the client's own segments go on as
    // sent, header included (counted after the server's GRO merged them).
    assert!(
        packets > 0,
        "no segment with the header reached the server: {rules}"
    );
    assert_eq!(count(&lab, "validated"), 1);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}
