//! `cargo xtask bench forward`: what forwarding through synguard costs, measured in one lab
//! run against plain kernel routing in the same guard namespace: iperf3 throughput client to
//! server, new connections per second (connect, one byte each way, close), and transfers
//! across a smaller link that path MTU discovery must find (downloads with it on the clients'
//! side, uploads with it on the servers' side, IPv4 and IPv6; each run starts with the
//! sender's learned MTU flushed), medians over repeats. Then the controller's own event path
//! (see userspace/benches/controller.rs).
//! Results go to results/bench-forward.json.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    build::{self, Profile, workspace_root},
    cmd,
    lab::{
        self, CLIENT_ADDR, CLIENT_ADDR6, GUARD_CLIENT_IFACE, GUARD_CLIENT_SIDE_ADDR,
        GUARD_CLIENT_SIDE_ADDR6, GUARD_SERVER_IFACE, GUARD_SERVER_SIDE_ADDR,
        GUARD_SERVER_SIDE_ADDR6, Host, Lab, LabGuard, PEER_IFACE, SERVER_ADDR, SERVER_ADDR6,
    },
    stats::median,
};

const IPERF_PORT: u16 = 5201;
/// Each connection-rate run (phase x repeat) gets its own server port: a run opens tens of
/// thousands of connections, and the server's TIME-WAIT on their 4-tuples would slow down
/// whichever run came next on the same port.
const ECHO_BASE_PORT: u16 = 5210;
const REPEATS: usize = 5;
const SECONDS: u64 = 3;
const CONNECT_THREADS: usize = 4;
/// A path MTU row: which side of the guard has the smaller link, over which family. The
/// sender of the transfer is on the far side of it: the server (a download) when the link is
/// on the clients' side, the client (an upload) when it is on the servers' side.
#[derive(Clone, Copy)]
struct SmallLink {
    name: &'static str,
    clients_side: bool,
    v6: bool,
}

const SMALL_LINKS: [SmallLink; 4] = [
    SmallLink {
        name: "clients_side_ipv4",
        clients_side: true,
        v6: false,
    },
    SmallLink {
        name: "servers_side_ipv4",
        clients_side: false,
        v6: false,
    },
    SmallLink {
        name: "clients_side_ipv6",
        clients_side: true,
        v6: true,
    },
    SmallLink {
        name: "servers_side_ipv6",
        clients_side: false,
        v6: true,
    },
];

impl SmallLink {
    /// 1400 bytes for IPv4, IPv6's minimum of 1280.
    fn mtu(self) -> u16 {
        if self.v6 { 1280 } else { 1400 }
    }

    /// The MSS of a 1500-byte path, which a client beyond the small link announces.
    fn full_path_mss(self) -> u16 {
        if self.v6 { 1440 } else { 1460 }
    }

    fn server(self) -> &'static str {
        if self.v6 { SERVER_ADDR6 } else { SERVER_ADDR }
    }
}

pub fn run(xtask: &Path) -> Result<()> {
    let synguard = build::synguard(Profile::Release)?;
    let lab = LabGuard(Lab::up(
        &lab::unique_suffix(),
        &synguard,
        &lab::server_command(xtask),
    )?);
    let mut iperf = lab
        .exec(
            Host::Server,
            "iperf3",
            ["-s", "-p", &IPERF_PORT.to_string()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 in the server namespace")?;
    let stop_echo = Arc::new(AtomicBool::new(false));
    let ports: Vec<u16> = (0..2 * REPEATS as u16)
        .map(|i| ECHO_BASE_PORT + i)
        .collect();
    let echoes = ports
        .iter()
        .map(|port| echo_server(&lab, *port, Arc::clone(&stop_echo)))
        .collect::<Result<Vec<_>>>()?;
    thread::sleep(Duration::from_millis(300)); // iperf3 -s has no readiness signal to poll
    let result = measure_both(&lab, &synguard);
    stop_echo.store(true, Ordering::Relaxed);
    for (port, echo) in ports.iter().zip(echoes) {
        let addr = echo_addr(*port);
        let _ = in_netns(&lab, Host::Client, move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        })?
        .join();
        let _ = echo.join();
    }
    let _ = iperf.kill();
    let _ = iperf.wait();
    let (routing, guarded) = result?;
    let controller = controller_bench()?;
    let (routed_gbps, guarded_gbps) = (
        figure(&routing, "throughput_gbps", "plain routing")?,
        figure(&guarded, "throughput_gbps", "synguard")?,
    );
    let (routed_cps, guarded_cps) = (
        figure(&routing, "connections_per_s", "plain routing")?,
        figure(&guarded, "connections_per_s", "synguard")?,
    );
    let mut small_links = serde_json::Map::new();
    let mut small_lines = Vec::new();
    for link in SMALL_LINKS {
        let key = format!("small_link_{}_gbps", link.name);
        let (routed, through) = (
            figure(&routing, &key, "plain routing")?,
            figure(&guarded, &key, "synguard")?,
        );
        small_links.insert(
            link.name.to_string(),
            json!({"mtu": link.mtu(), "plain_routing_gbps": routed, "synguard_gbps": through,
                   "ratio": through / routed}),
        );
        small_lines.push(format!(
            "{} ({} bytes) {routed:.2} -> {through:.2} Gbit/s (ratio {:.2})",
            link.name,
            link.mtu(),
            through / routed
        ));
    }
    let report = json!({
        "plain_routing": routing,
        "synguard": guarded,
        "throughput_ratio": guarded_gbps / routed_gbps,
        "connections_ratio": guarded_cps / routed_cps,
        "small_links": small_links,
        "controller": controller,
    });
    println!(
        "forward: throughput {routed_gbps:.2} Gbit/s routed, {guarded_gbps:.2} Gbit/s through \
         synguard (ratio {:.2}); new connections {routed_cps:.0}/s routed, {guarded_cps:.0}/s \
         through synguard (ratio {:.2}); across a smaller link, routed -> through synguard: \
         {}; medians of {REPEATS}",
        guarded_gbps / routed_gbps,
        guarded_cps / routed_cps,
        small_lines.join(", "),
    );
    let dir = workspace_root().join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("bench-forward.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("written to results/bench-forward.json");
    Ok(())
}

/// A figure a phase must have measured: a missing or non-positive one fails the bench rather
/// than becoming a ratio of 0 or 1.
fn figure(phase: &Value, key: &str, name: &str) -> Result<f64> {
    match phase[key].as_f64() {
        Some(value) if value > 0.0 => Ok(value),
        _ => bail!("bench forward: {name} measured no {key} ({phase})"),
    }
}

/// The guard's counters after the synguard phase: the traffic must have gone through it (its
/// cookies validated the connections, its programs forwarded the segments), or the phase
/// timed plain routing under another name.
fn guard_saw_the_traffic(lab: &Lab, synguard: &Path) -> Result<Value> {
    let out = cmd::stdout(&mut lab.exec(
        Host::Guard,
        synguard.to_str().context("non-UTF-8 path")?,
        ["stats", "--json"],
    ))?;
    let stats: Value = serde_json::from_str(&out).context("synguard stats --json")?;
    let mut seen = serde_json::Map::new();
    // pass_too_big: the small-link downloads' oversized segments went to the kernel as sent.
    for counter in [
        "cookie_valid",
        "forward_to_server",
        "forward_to_client",
        "pass_too_big",
    ] {
        let total = stats["total"][counter]
            .as_u64()
            .with_context(|| format!("synguard stats has no counter {counter}"))?;
        if total == 0 {
            bail!(
                "bench forward: the guard's {counter} stayed at 0: the traffic did not go through it"
            );
        }
        seen.insert(counter.to_string(), total.into());
    }
    Ok(Value::Object(seen))
}

fn measure_both(lab: &Lab, synguard: &Path) -> Result<(Value, Value)> {
    let routing = measure(lab, 0)?;
    let protect = format!(
        "{SERVER_ADDR}/32:{IPERF_PORT},{ECHO_BASE_PORT}-{}",
        ECHO_BASE_PORT + 2 * REPEATS as u16 - 1
    );
    let protect6 = format!("[{SERVER_ADDR6}/128]:{IPERF_PORT}");
    let mut guard = lab.start_guard(
        synguard,
        &[
            &["--protect", &protect, "--protect", &protect6][..],
            &lab::QUIET_GUARD,
            // One client address opens thousands of connections per second here: the
            // per-source limits (made for floods) stay out of a throughput measurement.
            &["--max-syn-rate", "0", "--max-half-open", "0"],
        ]
        .concat(),
        Stdio::null(),
    )?;
    let guarded = measure(lab, 1).and_then(|mut guarded| {
        guarded["guard_counters"] = guard_saw_the_traffic(lab, synguard)?;
        Ok(guarded)
    });
    lab::stop_guard(&mut guard);
    Ok((routing, guarded?))
}

fn echo_addr(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER_ADDR.parse().expect("the lab's address"), port)
}

/// Measures one phase (0: plain routing, 1: synguard).
fn measure(lab: &Lab, phase: u16) -> Result<Value> {
    let mut throughput = Vec::new();
    for _ in 0..REPEATS {
        let out = cmd::stdout(&mut lab.exec(
            Host::Client,
            "iperf3",
            [
                "-c",
                SERVER_ADDR,
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &SECONDS.to_string(),
                "-J",
            ],
        ))?;
        let report: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 reported no throughput")?;
        throughput.push(bps / 1e9);
    }
    let mut connections = Vec::new();
    for repeat in 0..REPEATS as u16 {
        let port = ECHO_BASE_PORT + phase * REPEATS as u16 + repeat;
        connections.push(connection_rate(lab, echo_addr(port))?);
    }
    let mut figures = json!({
        "throughput_gbps": median(throughput.clone()),
        "throughput_gbps_runs": throughput,
        "connections_per_s": median(connections.clone()),
        "connections_per_s_runs": connections,
    });
    for link in SMALL_LINKS {
        let runs = small_link_runs(lab, link)?;
        figures[format!("small_link_{}_gbps", link.name)] = json!(median(runs.clone()));
        figures[format!("small_link_{}_gbps_runs", link.name)] = json!(runs);
    }
    Ok(figures)
}

/// iperf3 transfers across `link`: the link's two ends at its MTU, the host on its far side
/// from the guard announcing a 1500-byte path's MSS (as one further away would, so that plain
/// routing has to discover the MTU as well); each run starts with the sender's
/// learned path MTU flushed and must end with the sender having learned it. The link is
/// restored afterwards.
fn small_link_runs(lab: &Lab, link: SmallLink) -> Result<Vec<f64>> {
    let (near, iface) = if link.clients_side {
        (Host::Client, GUARD_CLIENT_IFACE)
    } else {
        (Host::Server, GUARD_SERVER_IFACE)
    };
    let (sender, receiver_addr) = if link.clients_side {
        (
            Host::Server,
            if link.v6 { CLIENT_ADDR6 } else { CLIENT_ADDR },
        )
    } else {
        (Host::Client, link.server())
    };
    let family = if link.v6 { "-6" } else { "-4" };
    // The near host's route across the small link, whose MSS it announces.
    let (far_prefix, via) = match (link.clients_side, link.v6) {
        (true, false) => ("198.19.0.0/16", GUARD_CLIENT_SIDE_ADDR),
        (true, true) => ("2001:db8:19::/48", GUARD_CLIENT_SIDE_ADDR6),
        (false, false) => ("198.18.0.0/16", GUARD_SERVER_SIDE_ADDR),
        (false, true) => ("2001:db8:18::/48", GUARD_SERVER_SIDE_ADDR6),
    };
    let set_link = |mtu: u16, advmss: Option<u16>| -> Result<()> {
        let mtu = mtu.to_string();
        for (host, iface) in [(Host::Guard, iface), (near, PEER_IFACE)] {
            cmd::output(&mut cmd::new(
                "ip",
                ["-n", &lab.netns(host), "link", "set", iface, "mtu", &mtu],
            ))?;
        }
        let mut route: Vec<String> = [
            "-n",
            &lab.netns(near),
            family,
            "route",
            "replace",
            far_prefix,
            "via",
            via,
        ]
        .map(String::from)
        .to_vec();
        if let Some(mss) = advmss {
            route.extend(["advmss".into(), mss.to_string()]);
        }
        cmd::output(&mut cmd::new("ip", route))?;
        Ok(())
    };
    set_link(link.mtu(), Some(link.full_path_mss()))?;
    let mut runs = Vec::new();
    let measured = (0..REPEATS).try_for_each(|_| {
        cmd::output(&mut cmd::new(
            "ip",
            ["-n", &lab.netns(sender), family, "route", "flush", "cache"],
        ))?;
        let port = IPERF_PORT.to_string();
        let seconds = SECONDS.to_string();
        let mut args = vec!["-c", link.server(), "-p", &port, "-t", &seconds, "-J"];
        if link.clients_side {
            args.push("-R"); // the server sends
        }
        let out = cmd::stdout(&mut lab.exec(Host::Client, "iperf3", args))?;
        let report: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 reported no throughput")?;
        learned_the_small_mtu(lab, sender, receiver_addr, link)?;
        runs.push(bps / 1e9);
        Ok::<_, anyhow::Error>(())
    });
    set_link(1500, None)?;
    measured?;
    Ok(runs)
}

/// Fails unless `sender` has learned the small link's MTU toward `to` (the run took the path
/// MTU discovery path it is named for).
fn learned_the_small_mtu(lab: &Lab, sender: Host, to: &str, link: SmallLink) -> Result<()> {
    let learned = lab::learned_mtu(&lab.netns(sender), to)?;
    if learned != Some(link.mtu()) {
        bail!(
            "bench forward: {}: the sender learned {learned:?}, not the {}-byte path MTU",
            link.name,
            link.mtu()
        );
    }
    Ok(())
}

/// Runs `work` on a thread inside a lab namespace.
fn in_netns<T: Send + 'static>(
    lab: &Lab,
    host: Host,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<T>> {
    let netns = std::fs::File::open(format!("/run/netns/{}", lab.netns(host)))?;
    Ok(thread::spawn(move || {
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        work()
    }))
}

/// One byte in, one byte out, close: the server half of the connection-rate test.
fn echo_server(lab: &Lab, port: u16, stop: Arc<AtomicBool>) -> Result<thread::JoinHandle<()>> {
    let addr = echo_addr(port);
    let listener = in_netns(lab, Host::Server, move || TcpListener::bind(addr))?
        .join()
        .expect("bind thread")?;
    // Blocking accepts, one connection at a time (polling would add its own latency to
    // every connection); `stop_echo_server` wakes it with one last connection.
    Ok(thread::spawn(move || {
        let mut byte = [0u8; 1];
        while let Ok((mut stream, _)) = listener.accept() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            if stream.read_exact(&mut byte).is_ok() {
                let _ = stream.write_all(&byte);
            }
        }
    }))
}

/// Completed connections per second over `SECONDS`, from `CONNECT_THREADS` clients.
fn connection_rate(lab: &Lab, addr: SocketAddr) -> Result<f64> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(SECONDS);
    let workers: Vec<_> = (0..CONNECT_THREADS)
        .map(|_| {
            in_netns(lab, Host::Client, move || {
                let mut done = 0u64;
                let mut byte = [7u8; 1];
                while Instant::now() < deadline {
                    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    else {
                        continue;
                    };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    if stream.write_all(&byte).is_ok() && stream.read_exact(&mut byte).is_ok() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect::<Result<_>>()?;
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The controller bench's JSON line (validated flows per second, memory per flow).
fn controller_bench() -> Result<Value> {
    let out = cmd::stdout(cmd::cargo().current_dir(workspace_root()).args([
        "bench",
        "--package",
        "synguard",
        "--bench",
        "controller",
    ]))?;
    println!("{}", out.trim());
    let line = out
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .context("the controller bench printed no JSON")?;
    Ok(serde_json::from_str(line)?)
}
