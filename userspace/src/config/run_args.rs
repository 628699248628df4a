//! `synguard run`'s flags: what the guard starts with, which of them may change while it runs
//! (`synguard set`, SIGHUP), and the data plane's settings they make.

use std::path::PathBuf;

use clap::Args;
use log::LevelFilter;
use synguard_common::{
    maps::FLOWS_CAPACITY,
    segment::{EARLY_DATA_WINDOW, SynAckSettings},
};

use crate::{
    config::value_parsers::{parse_idle_timeout, parse_interval, seconds_parser},
    config::{
        policy_args::{PolicyArgs, PolicyStartArgs},
        service::ProtectedService,
    },
    dataplane::{attach::AttachMode, persist},
    flows::{table::FlowTimers, tcp_state::State},
};

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub start: StartArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

/// What the guard starts with and keeps until it restarts.
#[derive(Args, Clone)]
pub struct StartArgs {
    /// Configuration file: TOML, one key per long flag of this command (flags win over it);
    /// without it, /etc/synguard/synguard.toml if that exists. SIGHUP reads it again.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Interface facing the clients (as in `ip link`).
    #[arg(long, short = 'i', value_name = "IFACE")]
    pub iface: Option<String>,
    /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub mode: AttachMode,
    /// Print counter lines as JSON objects (one per line).
    #[arg(long)]
    pub json: bool,
    /// Protect a service with SYN cookies (repeatable): CIDR:PORTS, e.g. 198.19.1.2/32:80,443
    /// or [2001:db8::/64]:8000-8100. Traffic to anything else passes untouched.
    #[arg(long, value_name = "CIDR:PORTS")]
    pub protect: Vec<ProtectedService>,
    /// File with the 128-bit cookie secret (32 hex digits) shared by every guard behind one
    /// ECMP group; without it, a random secret from the OS.
    #[arg(long, value_name = "PATH")]
    pub cookie_key_file: Option<PathBuf>,
    /// Interface facing the protected servers: validated flows are joined and forwarded
    /// there. Without it, handshakes validate but never reach a server.
    #[arg(long, value_name = "IFACE")]
    pub server_iface: Option<String>,
    /// Most validated flows the data plane tracks (least recently used ones go first).
    #[arg(long, value_name = "FLOWS", default_value_t = FLOWS_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_flows: u32,
    /// Where bpffs is (mounted there if missing): the maps and links are pinned under it, so
    /// the programs keep guarding while no controller runs.
    #[arg(long, value_name = "PATH", env = "SYNGUARD_BPFFS", default_value = persist::BPFFS)]
    pub bpffs: PathBuf,
    #[command(flatten)]
    pub lists: PolicyStartArgs,
}

/// What `synguard set` and SIGHUP may change while the guard runs: every flag of this type,
/// and no other ([`live_keys`]).
#[derive(Args, Clone)]
pub struct LiveArgs {
    /// Seconds between counter lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Log level, for the controller and for the XDP program's own log statements.
    #[arg(long, value_name = "LEVEL", default_value_t = LevelFilter::Info)]
    pub log_level: LevelFilter,
    /// Seconds between cookie key rotations (a cookie stays valid across one rotation).
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub cookie_rotation: u64,
    /// MSS our SYN-ACKs announce over IPv4.
    #[arg(long, value_name = "BYTES", default_value_t = 1460,
          value_parser = clap::value_parser!(u16).range(536..=9000))]
    pub mss_v4: u16,
    /// MSS our SYN-ACKs announce over IPv6.
    #[arg(long, value_name = "BYTES", default_value_t = 1440,
          value_parser = clap::value_parser!(u16).range(1220..=9000))]
    pub mss_v6: u16,
    /// Window-scale shift our SYN-ACKs announce to clients that offer scaling.
    #[arg(long, value_name = "SHIFT", default_value_t = 7,
          value_parser = clap::value_parser!(u8).range(0..=14))]
    pub window_scale: u8,
    /// Bytes a client may send before its server has answered (the window our SYN-ACKs
    /// offer): the guard holds them and sends them on after the join, so a request leaves
    /// with the third ACK and a lost third ACK costs no retransmission. 0 makes clients wait
    /// for the join (a zero window, which they probe: better where the server speaks first).
    #[arg(long, value_name = "BYTES", default_value_t = EARLY_DATA_WINDOW)]
    pub early_data: u16,
    /// Maximum segment lifetime in seconds; TIME-WAIT lasts twice this.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0,
          value_parser = seconds_parser(0.1, 600.0))]
    pub msl: f64,
    /// Seconds a server may take to answer before its client is reset.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0,
          value_parser = seconds_parser(0.1, 120.0))]
    pub backend_timeout: f64,
    /// Idle timeout of a state (repeatable): STATE=SECONDS, 0 for never; states are
    /// syn_received, established, fin_wait_1, fin_wait_2, close_wait, closing, last_ack
    /// (defaults after conntrack's: established 5 days). A flow that idles out has both ends
    /// reset.
    #[arg(long, value_name = "STATE=SECONDS", value_parser = parse_idle_timeout)]
    pub idle_timeout: Vec<(State, u64)>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The settings `synguard set` and SIGHUP may change while the guard runs (by long flag): the
/// flags of [`LiveArgs`].
pub fn live_keys() -> Vec<String> {
    LiveArgs::augment_args(clap::Command::new("live"))
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect()
}

impl LiveArgs {
    pub fn timers(&self) -> FlowTimers {
        let mut timers = FlowTimers {
            msl_ns: (self.msl * 1e9) as u64,
            backend_timeout_ns: (self.backend_timeout * 1e9) as u64,
            ..FlowTimers::default()
        };
        for (state, seconds) in &self.idle_timeout {
            timers.idle_ns[*state as usize] = seconds * 1_000_000_000;
        }
        timers
    }

    pub fn syn_ack_settings(&self) -> SynAckSettings {
        SynAckSettings {
            mss_v4: self.mss_v4,
            mss_v6: self.mss_v6,
            window_scale: self.window_scale,
            window: self.early_data,
            ..SynAckSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_keys_are_the_live_types_flags_and_only_those() {
        let live = live_keys();
        for key in [
            "interval",
            "log-level",
            "early-data",
            "idle-timeout",
            "max-syn-rate",
            "block-ttl",
            "decision-log",
            "exabgp-style",
        ] {
            assert!(live.iter().any(|k| k == key), "{key} changes live");
        }
        for key in [
            "iface",
            "protect",
            "max-flows",
            "bpffs",
            "metrics-listen",
            "allow-file",
            "json",
        ] {
            assert!(!live.iter().any(|k| k == key), "{key} needs a restart");
        }
        // Every flag of `run` is either one or the other.
        let all = RunArgs::augment_args(clap::Command::new("run"));
        let start = StartArgs::augment_args(clap::Command::new("start"));
        assert_eq!(
            all.get_arguments().count(),
            start.get_arguments().count() + live.len()
        );
    }
}
