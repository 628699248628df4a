//! The counters a flood run reads at the flood's start and end: CPU time (all CPUs, the
//! guard's, the server's), the client link's frames, synguard's, the kernel's TCP statistics
//! and SYNPROXY's.

use std::{path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::{
    cmd,
    lab::{self, Host, Lab, PEER_IFACE},
};

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

pub struct Probes<'a> {
    pub lab: &'a Lab,
    pub synguard: Option<&'a Path>,
    pub guard_pid: Option<i32>,
    pub server_pid: Option<i32>,
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
    pub fn read(&self) -> Result<Reading> {
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
