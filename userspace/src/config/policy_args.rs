//! `synguard run`'s flags for the policy, auto mode and the exports.

use std::{net::SocketAddr, path::PathBuf};

use crate::{
    config::lists::{ListEntry, parse_prefix, read_list},
    config::value_parsers::seconds_parser,
    export::lines::{ExabgpStyle, Exports, LineSink},
    policy::engine::{BlockRules, Limits},
};
use anyhow::Result;
use clap::Args;
use ipnet::IpNet;
use synguard_common::maps::PolicySettings;

#[derive(Args, Clone)]
#[command(next_help_heading = "Policy (per source and service; 0 turns a limit off)")]
pub struct PolicyArgs {
    /// Seconds between policy rounds (rates, blocks, expiries, auto mode's switch).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0,
          value_parser = seconds_parser(0.1, 60.0))]
    pub policy_interval: f64,
    /// Most half-open connections a source may hold (cookies sent minus validated, decaying).
    #[arg(long, value_name = "COUNT", default_value_t = 1000.0,
          value_parser = limit_parser(1e9))]
    pub max_half_open: f64,
    /// Half-life of the half-open count, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0,
          value_parser = seconds_parser(0.1, 3600.0))]
    pub half_open_half_life: f64,
    /// Most SYNs per second a source may send (a token bucket with --syn-burst on top): the
    /// data plane drops SYNs over it at once (per CPU), the policy blocks the source.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub max_syn_rate: u64,
    /// SYNs a source may send at once above --max-syn-rate.
    #[arg(long, value_name = "COUNT", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub syn_burst: u64,
    /// Most bare ACKs with a forged or expired cookie per second from a source.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 1000.0,
          value_parser = limit_parser(1e9))]
    pub max_invalid_ack_rate: f64,
    /// Most stray FIN/RST/SYN-ACK segments (of no flow) per second from a source.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 1000.0,
          value_parser = limit_parser(1e9))]
    pub max_out_of_state_rate: f64,
    /// Seconds a first block lasts; each repeat offence doubles it.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=30 * 86400))]
    pub block_ttl: u64,
    /// The longest a policy block lasts, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=30 * 86400))]
    pub block_ttl_max: u64,
    /// Block a whole /24 (IPv4) or /64 (IPv6) once this many sources inside it are blocked.
    #[arg(long, value_name = "SOURCES", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=65536))]
    pub aggregate_sources: u64,
    /// Prefix length of IPv4 aggregates.
    #[arg(long, value_name = "BITS", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(8..=31))]
    pub aggregate_v4: u8,
    /// Prefix length of IPv6 aggregates.
    #[arg(long, value_name = "BITS", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(16..=127))]
    pub aggregate_v6: u8,
    /// Auto mode: SYNs per second to a service above which its SYNs get cookies (services
    /// may set their own with :auto=RATE).
    #[arg(long, value_name = "PER_SECOND", default_value_t = crate::policy::auto_mode::DEFAULT_AUTO_SYN_RATE,
          value_parser = limit_parser(1e9))]
    pub auto_syn_rate: f64,
    /// Auto mode: seconds the SYN rate must stay under half the threshold before cookies go off.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0,
          value_parser = seconds_parser(0.0, 3600.0))]
    pub auto_hold: f64,
    /// Append every decision as a JSON line to this file (`-`: stdout). Reopened for every
    /// write, so log rotation needs no signal.
    #[arg(long, value_name = "PATH")]
    pub decision_log: Option<LineSink>,
    /// Write ExaBGP API lines for blocks to this file or FIFO (`-`: stdout, for an ExaBGP
    /// `process` that runs synguard).
    #[arg(long, value_name = "PATH")]
    pub exabgp: Option<LineSink>,
    /// What the ExaBGP lines announce: blackhole (RFC 7999 community, next hop self),
    /// blackhole=NEXT_HOP, or flowspec (discard everything from the prefix).
    #[arg(long, value_name = "STYLE", default_value = "blackhole")]
    pub exabgp_style: ExabgpStyle,
}

/// The policy's start-only flags: the lists a start loads and where metrics are served.
#[derive(Args, Clone)]
#[command(next_help_heading = "Policy (per source and service; 0 turns a limit off)")]
pub struct PolicyStartArgs {
    /// Never block this prefix (repeatable; a bare address is a host).
    #[arg(long, value_name = "CIDR", value_parser = prefix_parser)]
    pub allow: Vec<IpNet>,
    /// Never block this prefix, and let its SYNs skip the cookie challenge (repeatable).
    #[arg(long, value_name = "CIDR", value_parser = prefix_parser)]
    pub allow_bypass: Vec<IpNet>,
    /// Allowlist file: one prefix per line, optionally followed by `bypass`; `#` comments.
    #[arg(long, value_name = "PATH")]
    pub allow_file: Option<PathBuf>,
    /// Static block list file: one prefix per line; `#` comments. Blocked until lifted.
    #[arg(long, value_name = "PATH")]
    pub block_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9469), at /metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
}

fn limit_parser(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |text: &str| match text.parse::<f64>() {
        Ok(value) if (0.0..=max).contains(&value) => Ok(value),
        _ => Err(format!(
            "{text:?} is not a number between 0 (no limit) and {max}"
        )),
    }
}

fn prefix_parser(text: &str) -> Result<IpNet, String> {
    parse_prefix(text).map_err(|e| e.to_string())
}

/// A limit of 0 is no limit.
fn limit(value: f64) -> Option<f64> {
    (value > 0.0).then_some(value)
}

impl PolicyArgs {
    /// What the data plane enforces on its own.
    pub fn data_plane_settings(&self) -> PolicySettings {
        PolicySettings {
            syn_rate: self.max_syn_rate,
            syn_burst: self.syn_burst,
            track_after: self.track_after(),
            _pad: [0; 6],
        }
    }

    /// The sketch's gate: half of what the strictest limit allows a source in one policy
    /// interval, at most 32 (a source is tracked long before it can break a limit; one-off
    /// sources of a random-source flood never are), at least 1.
    fn track_after(&self) -> u16 {
        let per_interval = [
            self.max_syn_rate as f64 * self.policy_interval,
            self.max_half_open,
            self.max_invalid_ack_rate * self.policy_interval,
            self.max_out_of_state_rate * self.policy_interval,
        ];
        let strictest = per_interval
            .into_iter()
            .filter(|limit| *limit > 0.0)
            .fold(f64::INFINITY, f64::min);
        (strictest / 2.0).clamp(1.0, 32.0) as u16
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_half_open: limit(self.max_half_open),
            max_syn_rate: (self.max_syn_rate > 0).then_some(self.max_syn_rate),
            syn_burst: self.syn_burst,
            max_invalid_ack_rate: limit(self.max_invalid_ack_rate),
            max_out_of_state_rate: limit(self.max_out_of_state_rate),
            half_open_half_life: self.half_open_half_life,
        }
    }

    pub fn rules(&self) -> BlockRules {
        BlockRules {
            ttl: self.block_ttl,
            max_ttl: self.block_ttl_max.max(self.block_ttl),
            aggregate_sources: self.aggregate_sources as usize,
            aggregate_v4: self.aggregate_v4,
            aggregate_v6: self.aggregate_v6,
            ..BlockRules::default()
        }
    }

    pub fn exports(&self) -> Result<Exports> {
        if self.decision_log == Some(LineSink::Stdout) && self.exabgp == Some(LineSink::Stdout) {
            anyhow::bail!(
                "--decision-log - and --exabgp - cannot share stdout: give one of them a file"
            );
        }
        let exports = Exports {
            decision_log: self.decision_log.clone(),
            exabgp: self
                .exabgp
                .clone()
                .map(|sink| (sink, self.exabgp_style.clone())),
        };
        if let Some(log) = &exports.decision_log {
            log.check()?;
        }
        if let Some((sink, _)) = &exports.exabgp {
            sink.check()?;
        }
        Ok(exports)
    }
}

impl PolicyStartArgs {
    /// The allowlist from the flags and the file.
    pub fn allowlist(&self) -> Result<Vec<ListEntry>> {
        let mut entries: Vec<ListEntry> = self
            .allow
            .iter()
            .map(|prefix| ListEntry {
                prefix: *prefix,
                bypass: false,
            })
            .chain(self.allow_bypass.iter().map(|prefix| ListEntry {
                prefix: *prefix,
                bypass: true,
            }))
            .collect();
        if let Some(path) = &self.allow_file {
            entries.extend(read_list(path, true)?);
        }
        Ok(entries)
    }

    pub fn blocklist(&self) -> Result<Vec<ListEntry>> {
        match &self.block_file {
            Some(path) => read_list(path, false),
            None => Ok(Vec::new()),
        }
    }
}
