//! `cargo xtask flood`: floods against real clients, defense after defense, in the lab.
//!
//! For each scenario, generator and defense: a fresh lab, the defense set up, the legitimate
//! client ([`crate::legit_client`]) connecting at a steady rate for the whole run, a quiet
//! warm-up (the no-flood baseline), the flood (bounded by timeout(1), from the client
//! namespace toward the lab server, so everything it sends and provokes stays in the lab),
//! a quiet cool-down. Counters are read just before the flood starts and just after it ends;
//! the report ([`crate::flood::report`]) compares the defenses run by run.

use std::{
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    build::{self, Profile},
    cmd,
    flood::{
        packet_socket,
        plan::{Case, Defense, Generator, Options, Scenario},
        probes::Probes,
        report::{self, Run},
    },
    guard_profile,
    lab::{self, GUARD_CLIENT_IFACE, Host, Lab, LabGuard, PEER_IFACE, SERVER_ADDR, SERVER_PORT},
    legit_client,
};

/// Quiet seconds before the flood (the baseline) and after it (the recovery).
const WARM_UP: Duration = Duration::from_secs(3);
const COOL_DOWN: Duration = Duration::from_secs(3);
/// Runs every scenario x generator x defense and writes one report per scenario under
/// results/flood/; returns the runs.
/// How long idle CPUs poll before they halt during the floods (see `lab::IdlePolling`).
const FLOOD_HALT_POLL_NS: u64 = 2_000_000;

pub fn run(xtask: &Path, options: &Options) -> Result<Vec<Run>> {
    if options.profile && lab::guard_cpu().is_none() {
        bail!(
            "--profile samples the CPU the guard has to itself, and this machine has one CPU: run without --profile"
        );
    }
    let synguard = build::synguard(Profile::Release)?;
    // Everything the runs start (labs' servers, floods, clients, synguard) stays off the
    // CPU the guard's receive threads get (see `lab::keep_off_guard_cpu`).
    lab::keep_off_guard_cpu()?;
    let _idle_polling = lab::IdlePolling::start(FLOOD_HALT_POLL_NS);
    let mut all = Vec::new();
    for &scenario in &options.scenarios {
        let generators: Vec<Generator> = options
            .generators
            .iter()
            .copied()
            .filter(|&generator| {
                let possible = match generator {
                    Generator::Hping3 => scenario.hping3_legs().is_some(),
                    Generator::PacketSocket | Generator::LiveFrames => true,
                };
                if !possible {
                    println!(
                        "flood: {}: {} skipped (hping3 cannot spoof inside a prefix)",
                        scenario.name(),
                        generator.name(),
                    );
                }
                possible
            })
            .collect();
        let mut runs = Vec::new();
        for repeat in 1..=options.repeats {
            for &generator in &generators {
                for &defense in &options.defenses {
                    let case = Case {
                        scenario,
                        generator,
                        defense,
                    };
                    println!(
                        "flood: {} ({} s, round {repeat} of {})...",
                        case.name(),
                        options.seconds,
                        options.repeats
                    );
                    let mut run =
                        run_one(xtask, &synguard, case, options).with_context(|| case.name())?;
                    run.repeat = repeat;
                    println!("flood:   {}", run.one_line());
                    runs.push(run);
                }
            }
        }
        if runs.is_empty() {
            // Nothing ran: the last report of this scenario stays.
            println!("flood: {}: nothing to run", scenario.name());
            continue;
        }
        let written = report::write(scenario, options, &runs)?;
        println!("flood: {} report: {}", scenario.name(), written.display());
        all.extend(runs);
    }
    Ok(all)
}

/// One case in a fresh lab (removed afterwards, also on error).
pub fn run_one(xtask: &Path, synguard: &Path, case: Case, options: &Options) -> Result<Run> {
    let defense = case.defense;
    let lab = LabGuard(Lab::up(
        &lab::unique_suffix(),
        synguard,
        &lab::server_command(xtask),
    )?);
    sysctl(
        &lab,
        Host::Server,
        "net.ipv4.tcp_syncookies",
        defense.server_syncookies(),
    )?;
    if !options.client_timestamps {
        sysctl(&lab, Host::Client, "net.ipv4.tcp_timestamps", "0")?;
    }
    let mut guard = set_up(&lab, synguard, defense, &options.guard_args)?;
    let result = measure(&lab, xtask, synguard, case, options, &guard);
    if let Some(guard) = guard.as_mut() {
        lab::stop_guard(guard);
    }
    result
}

fn sysctl(lab: &Lab, host: Host, key: &str, value: &str) -> Result<()> {
    cmd::output(&mut lab.exec(host, "sysctl", ["-qw", &format!("{key}={value}")]))?;
    Ok(())
}

/// Sets the defense up; synguard's process when the defense is synguard.
fn set_up(
    lab: &Lab,
    synguard: &Path,
    defense: Defense,
    guard_args: &[String],
) -> Result<Option<Child>> {
    match defense {
        Defense::None | Defense::Syncookies | Defense::SyncookiesAlways => Ok(None),
        Defense::Synproxy => {
            // The nftables wiki's SYNPROXY rules, on the forward path of the guard: SYNs to
            // the service skip conntrack, SYNPROXY answers them with cookies and opens the
            // connection to the server once the client's ACK proves it.
            let rules = format!(
                "table ip synguard_lab {{
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    iifname \"{GUARD_CLIENT_IFACE}\" ip daddr {SERVER_ADDR} tcp dport {SERVER_PORT} tcp flags syn notrack
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{GUARD_CLIENT_IFACE}\" ip daddr {SERVER_ADDR} tcp dport {SERVER_PORT} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }}
}}
"
            );
            let mut nft = lab.exec(Host::Guard, "nft", ["-f", "-"]);
            nft.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = nft.spawn().context("starting nft")?;
            use std::io::Write;
            child
                .stdin
                .take()
                .context("nft stdin")?
                .write_all(rules.as_bytes())?;
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "nft -f (SYNPROXY rules) failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            // Out-of-window ACKs must be invalid, not picked up mid-stream.
            sysctl(
                lab,
                Host::Guard,
                "net.netfilter.nf_conntrack_tcp_loose",
                "0",
            )?;
            Ok(None)
        }
        Defense::SynguardAlways | Defense::SynguardAuto => {
            let mode = if defense == Defense::SynguardAuto {
                "auto"
            } else {
                "always"
            };
            let protect = format!("{SERVER_ADDR}/32:{SERVER_PORT}:{mode}");
            let guard = lab.start_guard(
                synguard,
                &[
                    &["--protect", &protect][..],
                    &lab::QUIET_GUARD,
                    &guard_args.iter().map(String::as_str).collect::<Vec<_>>(),
                ]
                .concat(),
                Stdio::null(),
            )?;
            Ok(Some(guard))
        }
    }
}

fn measure(
    lab: &Lab,
    xtask: &Path,
    synguard: &Path,
    case: Case,
    options: &Options,
    guard: &Option<Child>,
) -> Result<Run> {
    let Case {
        scenario,
        generator,
        defense,
    } = case;
    let flood_length = Duration::from_secs(u64::from(options.seconds));
    let started = Instant::now();
    let load = legit_client::start(
        lab,
        options.legit_rate,
        WARM_UP + flood_length + COOL_DOWN,
        started,
    )?;
    // The phases of a load test are timed, not awaited: the baseline is what a quiet
    // WARM_UP looks like.
    thread::sleep(WARM_UP);
    let probes = Probes {
        lab,
        synguard: defense.is_synguard().then_some(synguard),
        guard_pid: guard.as_ref().map(|g| g.id() as i32),
        server_pid: lab.server_pid(),
    };
    let before = probes.read()?;
    let flood_started = started.elapsed().as_secs_f64();
    // Started first: a perf that cannot start leaves no flood running.
    let recording = match lab::guard_cpu() {
        Some(cpu) if options.profile => Some(guard_profile::start(
            cpu,
            options.seconds,
            &lab.state_dir().join("guard.perf"),
        )?),
        _ => None,
    };
    let mut floods = start_flood(lab, (xtask, synguard), scenario, generator, options)?;
    let deadline = Instant::now() + flood_length + Duration::from_secs(5);
    for flood in &mut floods {
        while flood.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = flood.kill();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    let after = probes.read()?;
    let flood_ended = started.elapsed().as_secs_f64();
    let attempts = load.finish()?;
    let mut run = report::Run::new(
        case,
        &attempts,
        (flood_started, flood_ended),
        &before,
        &after,
    );
    run.guard_profile = recording
        .map(guard_profile::Recording::finish)
        .transpose()?;
    Ok(run)
}

fn start_flood(
    lab: &Lab,
    (xtask, synguard): (&Path, &Path),
    scenario: Scenario,
    generator: Generator,
    options: &Options,
) -> Result<Vec<Child>> {
    let seconds = options.seconds;
    match generator {
        Generator::Hping3 => scenario
            .hping3_legs()
            .context("hping3 cannot produce this scenario")?
            .into_iter()
            .map(|mut leg| {
                leg.extend(["-p".to_string(), SERVER_PORT.to_string()]);
                lab.flood(seconds, &leg.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect(),
        Generator::PacketSocket => Ok(vec![
            lab.attacker(
                xtask.to_str().context("non-UTF-8 path")?,
                [
                    "lab-packet-flood".to_string(),
                    "--iface".into(),
                    PEER_IFACE.into(),
                    "--guard-mac".into(),
                    link_mac(lab, Host::Guard, GUARD_CLIENT_IFACE)?,
                    "--scenario".into(),
                    scenario.name(),
                    "--seconds".into(),
                    seconds.to_string(),
                    "--rate".into(),
                    options.attack_rate.to_string(),
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .context("starting the packet-socket flood")?,
        ]),
        Generator::LiveFrames => {
            let macs = (
                packet_socket::parse_mac(&link_mac(lab, Host::Client, PEER_IFACE)?)?,
                packet_socket::parse_mac(&link_mac(lab, Host::Guard, GUARD_CLIENT_IFACE)?)?,
            );
            let (templates, source_bits) = packet_socket::live_templates(scenario, macs);
            let mut args = vec![
                "flood-frames".to_string(),
                "--iface".into(),
                PEER_IFACE.into(),
                "--source-bits".into(),
                source_bits.to_string(),
                "--seconds".into(),
                seconds.to_string(),
                "--rate".into(),
                options.attack_rate.to_string(),
            ];
            for template in templates {
                args.push("--frame".into());
                args.push(hex::encode(template));
            }
            Ok(vec![
                lab.attacker(
                    build::lab_tool(synguard)
                        .to_str()
                        .context("non-UTF-8 path")?,
                    args,
                )
                .stdout(Stdio::null())
                .spawn()
                .context("starting the live-frames flood")?,
            ])
        }
    }
}

/// The MAC address of `iface` in `host`'s namespace (where crafted frames come from or go).
fn link_mac(lab: &Lab, host: Host, iface: &str) -> Result<String> {
    let links: Value = serde_json::from_str(&cmd::stdout(&mut cmd::new(
        "ip",
        ["-n", &lab.netns(host), "-j", "link", "show", "dev", iface],
    ))?)?;
    links[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC address on {iface}"))
}
