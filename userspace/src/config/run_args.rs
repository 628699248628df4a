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
    config::{policy_args::PolicyArgs, service::ProtectedService},
    dataplane::{attach::AttachMode, persist},
    flows::{table::FlowTimers, tcp_state::State},
};

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Configuration file: TOML, one key per long flag of this command (flags win over it);
    /// without it, /etc/synguard/synguard.toml if that exists. SIGHUP reads it again.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Interface facing the clients (as in `ip link`).
    #[arg(long, short = 'i', value_name = "IFACE")]
    pub(crate) iface: Option<String>,
    /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub(crate) mode: AttachMode,
    /// Seconds between counter lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    pub(crate) interval: f64,
    /// Print counter lines as JSON objects (one per line).
    #[arg(long)]
    pub(crate) json: bool,
    /// Log level, for the controller and for the XDP program's own log statements.
    #[arg(long, value_name = "LEVEL", default_value_t = LevelFilter::Info)]
    pub(crate) log_level: LevelFilter,
    /// Protect a service with SYN cookies (repeatable): CIDR:PORTS, e.g. 198.19.1.2/32:80,443
    /// or [2001:db8::/64]:8000-8100. Traffic to anything else passes untouched.
    #[arg(long, value_name = "CIDR:PORTS")]
    pub(crate) protect: Vec<ProtectedService>,
    /// File with the 128-bit cookie secret (32 hex digits) shared by every guard behind one
    /// ECMP group; without it, a random secret from the OS.
    #[arg(long, value_name = "PATH")]
    pub(crate) cookie_key_file: Option<PathBuf>,
    /// Seconds between cookie key rotations (a cookie stays valid across one rotation).
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub(crate) cookie_rotation: u64,
    /// MSS our SYN-ACKs announce over IPv4.
    #[arg(long, value_name = "BYTES", default_value_t = 1460,
          value_parser = clap::value_parser!(u16).range(536..=9000))]
    mss_v4: u16,
    /// MSS our SYN-ACKs announce over IPv6.
    #[arg(long, value_name = "BYTES", default_value_t = 1440,
          value_parser = clap::value_parser!(u16).range(1220..=9000))]
    mss_v6: u16,
    /// Window-scale shift our SYN-ACKs announce to clients that offer scaling.
    #[arg(long, value_name = "SHIFT", default_value_t = 7,
          value_parser = clap::value_parser!(u8).range(0..=14))]
    pub(crate) window_scale: u8,
    /// Bytes a client may send before its server has answered (the window our SYN-ACKs
    /// offer): the guard holds them and sends them on after the join, so a request leaves
    /// with the third ACK and a lost third ACK costs no retransmission. 0 makes clients wait
    /// for the join (a zero window, which they probe: better where the server speaks first).
    #[arg(long, value_name = "BYTES", default_value_t = EARLY_DATA_WINDOW)]
    pub(crate) early_data: u16,
    /// Interface facing the protected servers: validated flows are joined and forwarded
    /// there. Without it, handshakes validate but never reach a server.
    #[arg(long, value_name = "IFACE")]
    pub(crate) server_iface: Option<String>,
    /// Most validated flows the data plane tracks (least recently used ones go first).
    #[arg(long, value_name = "FLOWS", default_value_t = FLOWS_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub(crate) max_flows: u32,
    /// Maximum segment lifetime in seconds; TIME-WAIT lasts twice this.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0,
          value_parser = seconds_parser(0.1, 600.0))]
    pub(crate) msl: f64,
    /// Seconds a server may take to answer before its client is reset.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0,
          value_parser = seconds_parser(0.1, 120.0))]
    pub(crate) backend_timeout: f64,
    /// Idle timeout of a state (repeatable): STATE=SECONDS, 0 for never; states are
    /// syn_received, established, fin_wait_1, fin_wait_2, close_wait, closing, last_ack.
    #[arg(long, value_name = "STATE=SECONDS", value_parser = parse_idle_timeout)]
    pub(crate) idle_timeout: Vec<(State, u64)>,
    /// Where bpffs is (mounted there if missing): the maps and links are pinned under it, so
    /// the programs keep guarding while no controller runs.
    #[arg(long, value_name = "PATH", env = "SYNGUARD_BPFFS", default_value = persist::BPFFS)]
    pub(crate) bpffs: PathBuf,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

/// The settings `synguard set` and SIGHUP may change while the guard runs (by long flag).
pub const LIVE_KEYS: &[&str] = &[
    "interval",
    "log-level",
    "cookie-rotation",
    "mss-v4",
    "mss-v6",
    "window-scale",
    "early-data",
    "msl",
    "backend-timeout",
    "idle-timeout",
    "policy-interval",
    "max-half-open",
    "half-open-half-life",
    "max-syn-rate",
    "syn-burst",
    "max-invalid-ack-rate",
    "max-out-of-state-rate",
    "block-ttl",
    "block-ttl-max",
    "aggregate-sources",
    "aggregate-v4",
    "aggregate-v6",
    "auto-syn-rate",
    "auto-hold",
    "decision-log",
    "exabgp",
    "exabgp-style",
];

impl RunArgs {
    /// Takes every live setting from `new` (the others stay as the guard started).
    pub fn take_live(&mut self, new: &RunArgs) {
        self.interval = new.interval;
        self.log_level = new.log_level;
        self.cookie_rotation = new.cookie_rotation;
        self.mss_v4 = new.mss_v4;
        self.mss_v6 = new.mss_v6;
        self.window_scale = new.window_scale;
        self.early_data = new.early_data;
        self.msl = new.msl;
        self.backend_timeout = new.backend_timeout;
        self.idle_timeout = new.idle_timeout.clone();
        let (metrics_listen, allow, allow_bypass, allow_file, block_file) = (
            self.policy.metrics_listen,
            self.policy.allow.clone(),
            self.policy.allow_bypass.clone(),
            self.policy.allow_file.clone(),
            self.policy.block_file.clone(),
        );
        self.policy = new.policy.clone();
        self.policy.metrics_listen = metrics_listen;
        self.policy.allow = allow;
        self.policy.allow_bypass = allow_bypass;
        self.policy.allow_file = allow_file;
        self.policy.block_file = block_file;
    }

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
