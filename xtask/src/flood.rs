//! `cargo xtask flood`: floods against real clients, defense after defense, in the lab.
//!
//! For each scenario, generator and defense: a fresh lab, the defense set up, the legitimate
//! client ([`crate::legit_client`]) connecting at a steady rate for the whole run, a quiet
//! warm-up (the no-flood baseline), the flood (bounded by timeout(1), from the client
//! namespace toward the lab server, so everything it sends and provokes stays in the lab),
//! a quiet cool-down. Counters are read just before the flood starts and just after it ends;
//! the report ([`crate::flood_report`]) compares the defenses run by run.

use std::{
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::{
    build::{self, Profile},
    cmd,
    flood_report::{self, Run},
    guard_profile,
    lab::{self, GUARD_CLIENT_IFACE, Host, Lab, LabGuard, PEER_IFACE, SERVER_ADDR, SERVER_PORT},
    legit_client, packet_flood,
};

/// Quiet seconds before the flood (the baseline) and after it (the recovery).
const WARM_UP: Duration = Duration::from_secs(3);
const COOL_DOWN: Duration = Duration::from_secs(3);
/// The fixed-source scenario's spoofed source: inside the lab, never the real client.
pub const FIXED_SOURCE: [u8; 4] = [198, 18, 1, 99];
/// The legitimate client's /24, for the scenario that spoofs sources inside it.
pub const CLIENT_PREFIX: [u8; 3] = [198, 18, 1];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// SYNs from random sources (`hping3 -S --flood --rand-source`).
    RandomSyn,
    /// SYNs from one spoofed source.
    FixedSyn,
    /// Bare ACKs from random sources with random sequence and acknowledgment numbers.
    Ack,
    /// RSTs from random sources.
    Rst,
    /// FINs (with ACK, as stacks send them) from random sources.
    Fin,
    /// SYNs from random sources inside the legitimate client's own /24 (its address too).
    ClientPrefixSyn,
    /// SYN, ACK, RST and FIN floods at once, random sources.
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Defense {
    /// Nothing: the guard routes, the server runs with tcp_syncookies=0.
    None,
    /// The server kernel's SYN cookies when its SYN queue overflows (tcp_syncookies=1).
    Syncookies,
    /// The server kernel's SYN cookies for every SYN (tcp_syncookies=2).
    SyncookiesAlways,
    /// netfilter SYNPROXY on the guard (nft synproxy); the server as Linux ships it
    /// (tcp_syncookies=1).
    Synproxy,
    /// synguard, the service in `always` mode; the server as Linux ships it.
    SynguardAlways,
    /// synguard, the service in `auto` mode; the server as Linux ships it.
    SynguardAuto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// hping3, one process per attack leg (the headline tool; about 150-200k packets/s here).
    Hping3,
    /// Ours (`packet_flood`): crafted frames, 64 per sendmmsg on an AF_PACKET socket; several
    /// times hping3's rate, spoofed sources inside the lab's range.
    PacketSocket,
    /// Ours (`synguard lab-flood-frames`): BPF_PROG_TEST_RUN in live-frames mode redirects
    /// randomized copies of template frames into the client's link; the guard receives
    /// page-pool frames, as from a NIC, not socket buffers veth must copy. Millions of
    /// frames/s, in bursts; `--attack-rate` spreads them out (at most 64 back to back).
    LiveFrames,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::RandomSyn,
        Scenario::FixedSyn,
        Scenario::Ack,
        Scenario::Rst,
        Scenario::Fin,
        Scenario::ClientPrefixSyn,
        Scenario::Mixed,
    ];

    /// The hping3 processes of this scenario, as their flag lists (the target port and
    /// address are added); `None` when hping3 cannot produce it.
    fn hping3_legs(self) -> Option<Vec<Vec<String>>> {
        let random = |flags: &str| vec![flags.to_string(), "--rand-source".to_string()];
        Some(match self {
            Scenario::RandomSyn => vec![random("-S")],
            Scenario::FixedSyn => vec![vec![
                "-S".into(),
                "-a".into(),
                std::net::Ipv4Addr::from(FIXED_SOURCE).to_string(),
            ]],
            Scenario::Ack => vec![random("-A")],
            Scenario::Rst => vec![random("-R")],
            Scenario::Fin => vec![random("-FA")],
            // hping3 spoofs one fixed address or random ones anywhere, never inside a prefix.
            Scenario::ClientPrefixSyn => return None,
            Scenario::Mixed => vec![random("-S"), random("-A")],
        })
    }

    pub fn name(self) -> String {
        cli_name(self)
    }
}

impl Defense {
    pub const ALL: [Defense; 6] = [
        Defense::None,
        Defense::Syncookies,
        Defense::SyncookiesAlways,
        Defense::Synproxy,
        Defense::SynguardAlways,
        Defense::SynguardAuto,
    ];

    pub fn name(self) -> String {
        cli_name(self)
    }

    /// The server's tcp_syncookies: off for `none`, the kernel's default (1) behind a guard.
    fn server_syncookies(self) -> &'static str {
        match self {
            Defense::None => "0",
            Defense::SyncookiesAlways => "2",
            _ => "1",
        }
    }

    fn is_synguard(self) -> bool {
        matches!(self, Defense::SynguardAlways | Defense::SynguardAuto)
    }
}

impl Generator {
    pub const ALL: [Generator; 3] = [
        Generator::Hping3,
        Generator::PacketSocket,
        Generator::LiveFrames,
    ];

    pub fn name(self) -> String {
        cli_name(self)
    }
}

/// A value's name on the command line (`random-syn`, `synguard-always`...).
fn cli_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_string())
        .unwrap_or_default()
}

/// What `cargo xtask flood` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub defenses: Vec<Defense>,
    pub generators: Vec<Generator>,
    pub seconds: u32,
    /// The packet-socket and live-frames generators' frames per second; 0: as fast as they can.
    pub attack_rate: u64,
    /// Legitimate connections per second.
    pub legit_rate: u32,
    /// TCP timestamps on the legitimate client (off: options ride only in the cookie).
    pub client_timestamps: bool,
    /// Rounds over every generator and defense (interleaved, so drift hits them alike).
    pub repeats: u32,
    /// Sample the guard's CPU during each flood (see `guard_profile`).
    pub profile: bool,
    /// Extra arguments for `synguard run`.
    pub guard_args: Vec<String>,
}

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
        let written = flood_report::write(scenario, options, &runs)?;
        println!("flood: {} report: {}", scenario.name(), written.display());
        all.extend(runs);
    }
    Ok(all)
}

/// One comparison: a scenario, the generator that floods, the defense that faces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub scenario: Scenario,
    pub generator: Generator,
    pub defense: Defense,
}

impl Case {
    pub fn name(&self) -> String {
        format!(
            "{} with {} against {}",
            self.scenario.name(),
            self.generator.name(),
            self.defense.name()
        )
    }
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
    let mut run = flood_report::Run::new(
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
                packet_flood::parse_mac(&link_mac(lab, Host::Client, PEER_IFACE)?)?,
                packet_flood::parse_mac(&link_mac(lab, Host::Guard, GUARD_CLIENT_IFACE)?)?,
            );
            let (templates, source_bits) = packet_flood::live_templates(scenario, macs);
            let mut args = vec![
                "lab-flood-frames".to_string(),
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
                lab.attacker(synguard.to_str().context("non-UTF-8 path")?, args)
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

/// Counter readings taken at the flood's start and end.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub at: Option<Instant>,
    /// /proc/stat: all CPUs' busy, softirq and total jiffies.
    pub cpu_busy: u64,
    pub cpu_softirq: u64,
    pub cpu_total: u64,
    /// utime+stime jiffies of the guard (its receive threads, plus the synguard controller
    /// when it runs) and of the lab server.
    pub guard_process: Option<u64>,
    pub server_process: Option<u64>,
    /// The client's link toward the guard: what the attack side sent (incl. what the veth
    /// could not queue) and received back.
    pub client_tx: u64,
    pub client_tx_dropped: u64,
    pub client_rx: u64,
    /// Named counters: `synguard.*`, `server.*` and `guard.*` (kernel TCP statistics),
    /// `synproxy.*`.
    pub counters: Map<String, Value>,
}

struct Probes<'a> {
    lab: &'a Lab,
    synguard: Option<&'a Path>,
    guard_pid: Option<i32>,
    server_pid: Option<i32>,
}

/// Kernel TCP statistics worth showing in a flood: SYN queue overflows and the kernel's
/// own cookies.
const KERNEL_COUNTERS: &[&str] = &[
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPReqQFullDrop",
    "TcpExtTCPReqQFullDoCookies",
    "TcpExtSyncookiesSent",
    "TcpExtSyncookiesRecv",
    "TcpExtSyncookiesFailed",
    "TcpOutRsts",
];

impl Probes<'_> {
    fn read(&self) -> Result<Reading> {
        let (cpu_busy, cpu_softirq, cpu_total) = cpu_jiffies()?;
        let link = self.client_link()?;
        let mut counters = Map::new();
        for (host, prefix) in [(Host::Server, "server"), (Host::Guard, "guard")] {
            let nstat: Value = serde_json::from_str(&cmd::stdout(&mut self.lab.exec(
                host,
                "nstat",
                ["-asz", "--json"],
            ))?)?;
            for name in KERNEL_COUNTERS {
                if let Some(value) = nstat["kernel"][name].as_u64() {
                    counters.insert(format!("{prefix}.{name}"), value.into());
                }
            }
        }
        for (name, value) in synproxy_stats(&cmd::stdout(&mut self.lab.exec(
            Host::Guard,
            "cat",
            ["/proc/net/stat/synproxy"],
        ))?) {
            counters.insert(format!("synproxy.{name}"), value.into());
        }
        if let Some(synguard) = self.synguard {
            let stats: Value = serde_json::from_str(&cmd::stdout(&mut self.lab.exec(
                Host::Guard,
                synguard.to_str().context("non-UTF-8 path")?,
                ["stats", "--json"],
            ))?)?;
            if let Some(total) = stats["total"].as_object() {
                for (name, value) in total {
                    counters.insert(format!("synguard.{name}"), value.clone());
                }
            }
        }
        Ok(Reading {
            at: Some(Instant::now()),
            cpu_busy,
            cpu_softirq,
            cpu_total,
            guard_process: Some(
                self.guard_pid.and_then(process_jiffies).unwrap_or(0) + guard_receive_jiffies()?,
            ),
            server_process: self.server_pid.and_then(process_jiffies),
            client_tx: link["tx"]["packets"].as_u64().unwrap_or(0),
            client_tx_dropped: link["tx"]["dropped"].as_u64().unwrap_or(0),
            client_rx: link["rx"]["packets"].as_u64().unwrap_or(0),
            counters,
        })
    }

    fn client_link(&self) -> Result<Value> {
        let links: Value = serde_json::from_str(&cmd::stdout(&mut cmd::new(
            "ip",
            [
                "-n",
                &self.lab.netns(Host::Client),
                "-s",
                "-j",
                "link",
                "show",
                "dev",
                PEER_IFACE,
            ],
        ))?)?;
        Ok(links[0]["stats64"].clone())
    }
}

/// Busy, softirq and total jiffies of all CPUs, from /proc/stat's `cpu` line.
fn cpu_jiffies() -> Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_cpu_line(stat.lines().next().unwrap_or_default())
}

/// What the guard's receive path cost: the busy jiffies of the CPU its receive threads have to
/// themselves (their own time and the softirq work they trigger, such as the peer links'
/// XDP), or, on a single CPU, the threads' own time.
fn guard_receive_jiffies() -> Result<u64> {
    let Some(cpu) = lab::guard_cpu() else {
        return Ok(lab::guard_receive_threads()
            .into_iter()
            .filter_map(process_jiffies)
            .sum());
    };
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|line| line.starts_with(&name))
        .with_context(|| format!("no {name}line in /proc/stat"))?;
    Ok(parse_cpu_line(line)?.0)
}

fn parse_cpu_line(line: &str) -> Result<(u64, u64, u64)> {
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("parsing /proc/stat")?;
    // user nice system idle iowait irq softirq steal ...
    if fields.len() < 7 {
        bail!("/proc/stat's cpu line has {} fields", fields.len());
    }
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields[4];
    Ok((total - idle, fields[6], total))
}

/// utime + stime of a process, jiffies (fields 14 and 15 of /proc/PID/stat).
fn process_jiffies(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// /proc/net/stat/synproxy: a header line, then one line of hex counters per CPU; summed.
fn synproxy_stats(text: &str) -> Vec<(String, u64)> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for line in lines {
        for (sum, field) in sums.iter_mut().zip(line.split_whitespace()) {
            *sum += u64::from_str_radix(field, 16).unwrap_or(0);
        }
    }
    names
        .into_iter()
        .map(str::to_owned)
        .zip(sums)
        .filter(|(name, _)| name != "entries")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines_split_into_busy_softirq_and_total() {
        let (busy, softirq, total) = parse_cpu_line("cpu  100 5 50 1000 20 3 40 2 0 0").unwrap();
        assert_eq!(total, 100 + 5 + 50 + 1000 + 20 + 3 + 40 + 2);
        assert_eq!(busy, total - 1020);
        assert_eq!(softirq, 40);
        assert!(parse_cpu_line("cpu 1 2").is_err());
        assert!(parse_cpu_line("cpu 1 2 x 4 5 6 7").is_err());
    }

    #[test]
    fn synproxy_stats_sum_the_cpus_in_hex() {
        let text = "entries\t\tsyn_received\tcookie_invalid\tcookie_valid\tcookie_retrans\tconn_reopened\n\
                    00000000  0000000a 00000001 00000002 00000000 00000000\n\
                    00000000  00000010 00000000 00000003 00000000 00000000\n";
        let stats = synproxy_stats(text);
        assert_eq!(stats[0], ("syn_received".to_string(), 26));
        assert_eq!(stats[1], ("cookie_invalid".to_string(), 1));
        assert_eq!(stats[2], ("cookie_valid".to_string(), 5));
        assert!(synproxy_stats("").is_empty());
    }

    #[test]
    fn process_times_skip_a_command_name_with_spaces() {
        let pid = std::process::id() as i32;
        assert!(process_jiffies(pid).is_some());
        assert_eq!(process_jiffies(-1), None);
    }
}
