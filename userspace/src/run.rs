//! `synguard run`: load, attach, report counters every interval, detach on SIGINT/SIGTERM.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya_log::EbpfLogger;
use clap::Args;
use log::{LevelFilter, info, warn};
use std::path::PathBuf;

use aya::maps::RingBuf;
use synguard::{
    attach::{self, AttachMode},
    clock::cookie_counter_now,
    flow_events,
    guard_config::{self, CookieSecret, KeySchedule, ProtectedService},
    object, privilege,
    stats::{self, Reading},
};
use synguard::{
    control,
    export::LineSink,
    flow_control::FlowControl,
    flow_filter::FlowFilter,
    flows::FlowTimers,
    metrics::{self, Snapshot},
    persist::{self, CLIENT_LINK, Pins, SERVER_LINK},
    policy::Policy,
    policy_control::{PolicyControl, parse_prefix, unix_now},
    tcp_state::State,
};

use crate::{config::Config, policy_args::PolicyArgs};
use synguard_common::{
    maps::{FLOW_EVENTS_MAP, FLOWS_CAPACITY, FLOWS_MAP, event_kind},
    segment::{EARLY_DATA_WINDOW, SynAckSettings},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
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

pub fn seconds_parser(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |text: &str| match text.parse::<f64>() {
        Ok(seconds) if (min..=max).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between {min} and {max}"
        )),
    }
}

fn parse_idle_timeout(text: &str) -> Result<(State, u64), String> {
    let (name, seconds) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not STATE=SECONDS"))?;
    let state = State::ALL
        .into_iter()
        .find(|state| {
            state.key() == name && !matches!(state, State::Closed | State::Listen | State::TimeWait)
        })
        .ok_or_else(|| {
            format!("{name:?} is not a state with an idle timeout (TIME-WAIT follows --msl)")
        })?;
    let seconds = seconds
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= 30 * 86400)
        .ok_or_else(|| format!("{seconds:?} is not a whole number of seconds up to 30 days"))?;
    Ok((state, seconds))
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.1..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0.1 and 3600"
        )),
    }
}

/// `synguard run` with the flags given after `run` (the configuration file is read here).
pub fn run(cli: Vec<std::ffi::OsString>) -> Result<()> {
    let (args, config) = Config::load(cli)?;
    // The logger passes everything; the global maximum is the level, so `set` can change it.
    env_logger::Builder::new()
        .filter_level(LevelFilter::Trace)
        .format_timestamp_millis()
        .init();
    log::set_max_level(args.log_level);
    privilege::require_xdp_privileges("synguard run")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(serve(args, config))
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
    fn take_live(&mut self, new: &RunArgs) {
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

    fn timers(&self) -> FlowTimers {
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

    fn syn_ack_settings(&self) -> SynAckSettings {
        SynAckSettings {
            mss_v4: self.mss_v4,
            mss_v6: self.mss_v6,
            window_scale: self.window_scale,
            window: self.early_data,
            ..SynAckSettings::default()
        }
    }
}

async fn serve(mut args: RunArgs, mut config: Config) -> Result<()> {
    let iface = args.iface.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "no interface: give --iface IFACE (or iface = \"IFACE\" in the configuration)"
        )
    })?;
    // Everything the operator gave is checked before the kernel is touched.
    let key_file_secret = match &args.cookie_key_file {
        Some(path) => Some(CookieSecret::from_file(path)?),
        None => None,
    };
    let timers = args.timers();
    if let Some(server_iface) = &args.server_iface
        && *server_iface == iface
    {
        anyhow::bail!("--server-iface must differ from --iface: the guard sits between two links");
    }
    guard_config::service_slots(&args.protect)?;
    let exports = args.policy.exports()?;
    let allowlist = args.policy.allowlist()?;
    let blocklist = args.policy.blocklist()?;
    let metrics_text = metrics::Shared::default();
    if let Some(listen) = args.policy.metrics_listen {
        metrics::serve(listen, metrics_text.clone())?;
        info!("metrics at http://{listen}/metrics");
    }
    if std::os::unix::net::UnixStream::connect(control::socket_path(&iface)).is_ok() {
        anyhow::bail!(
            "a synguard already runs on {iface}: stop it first (or tune it with `synguard set`)"
        );
    }
    // The maps and links live on bpffs: an earlier controller's are adopted.
    let pins = Pins::of(&iface, &args.bpffs);
    pins.prepare(&args.bpffs)?;
    let adopting = pins.adoptable();
    pins.claim_build(&persist::build_id(object::EBPF_OBJECT), adopting)?;
    let secret = match key_file_secret {
        Some(secret) => secret,
        None => match pins.read(SECRET_FILE)? {
            // Cookies issued before a restart stay valid.
            Some(hex) => CookieSecret::from_hex(hex.trim()).context("the saved cookie secret")?,
            None => {
                let secret = CookieSecret::random()?;
                pins.write(SECRET_FILE, secret.to_hex().as_bytes())?;
                secret
            }
        },
    };
    let mut ebpf = object::load_pinned(args.log_level, args.max_flows, &pins.dir)?;
    let rotations = pins
        .read(ROTATIONS_FILE)?
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let mut keys = KeySchedule::new(secret, rotations);
    keys.update(&mut ebpf, args.cookie_rotation)?;
    guard_config::write_settings(&mut ebpf, &args.syn_ack_settings(), cookie_counter_now())?;
    guard_config::write_protected(&mut ebpf, &args.protect, args.policy.auto_syn_rate)?;
    guard_config::write_policy_settings(&mut ebpf, &args.policy.data_plane_settings())?;
    for service in &args.protect {
        info!(
            "protecting {} ({})",
            synguard::policy_control::service_name(service),
            service.mode.name()
        );
    }
    let mut policy = PolicyControl::new(
        &mut ebpf,
        Policy::new(args.policy.limits(), args.policy.rules()),
        &args.protect,
        args.policy.auto_syn_rate,
        args.policy.auto_hold,
        exports,
        Some(pins.clone()),
    )?;
    for entry in &allowlist {
        policy.allow(entry.prefix, entry.bypass)?;
    }
    for entry in &blocklist {
        policy.block(entry.prefix, None)?;
    }
    let events = RingBuf::try_from(
        ebpf.take_map(FLOW_EVENTS_MAP)
            .context("flow event ring buffer missing from the eBPF object")?,
    )?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until the end.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the flow event ring buffer")?;
    let mut flows = FlowControl::new(
        ebpf.take_map(FLOWS_MAP)
            .context("flows map missing from the eBPF object")?,
        FlowFilter::take(&mut ebpf)?,
        timers,
    )?;
    flows.table.early_data_window = args.early_data.into();
    let logger = EbpfLogger::init(&mut ebpf).context("starting the eBPF log reader")?;
    // SAFETY: the logger owns the ring buffer fd and lives inside the AsyncFd until the end.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the eBPF log ring buffer")?;
    let counters = object::counters_map(&mut ebpf)?;
    if adopting {
        let adopted = flows.adopt_all();
        info!("adopted {adopted} flows from the guard left running on {iface}");
    }
    object::load_stages(&mut ebpf)?;
    // The server side first: once the client side runs, validated flows need it.
    let server_link = match &args.server_iface {
        Some(server_iface) => {
            let program = object::load_xdp(&mut ebpf, object::SERVER_PROGRAM)?;
            let attached =
                attach::attach_pinned(program, server_iface, args.mode, &pins.link(SERVER_LINK))
                    .inspect_err(|_| {
                        if !adopting {
                            let _ = pins.remove();
                        }
                    })?;
            report_attach(server_iface, &attached);
            Some((server_iface.clone(), attached.link))
        }
        None => None,
    };
    let program = object::load_xdp(&mut ebpf, object::GUARD_PROGRAM)?;
    let attached = match attach::attach_pinned(program, &iface, args.mode, &pins.link(CLIENT_LINK))
    {
        Ok(attached) => attached,
        Err(error) => {
            // Nothing may stay changed after an error.
            if !adopting {
                let _ = pins.remove();
                if let Some((_, link)) = server_link {
                    let _ = object::program(&mut ebpf, object::SERVER_PROGRAM)?.detach(link);
                }
            }
            return Err(error);
        }
    };
    report_attach(&iface, &attached);
    if server_link.is_none() {
        warn!("no --server-iface: handshakes validate but no flow reaches a server");
    }
    let control_path = control::socket_path(&iface);
    let _ = std::fs::create_dir_all(control::SOCKET_DIR);
    let _ = std::fs::remove_file(&control_path);
    let control_socket = tokio::net::UnixListener::bind(&control_path)
        .with_context(|| format!("creating the control socket {}", control_path.display()))?;
    control::secure(&control_path)?;
    let mut flow_ticker = tokio::time::interval(Duration::from_millis(100));
    let mut policy_ticker = ticker_every(args.policy.policy_interval);

    let mut rotation = tokio::time::interval(Duration::from_secs(1));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut ticker = ticker_every(args.interval);
    ticker.tick().await;
    let mut before = Reading::from_per_cpu(Vec::new());
    let mut before_at = Instant::now();
    // What `set`, `get`, a reload or a detach may change, borrowed for one request.
    macro_rules! live {
        ($stats:expr) => {
            Live {
                stats: $stats,
                detach: false,
                keys: &mut keys,
                pins: &pins,
                args: &mut args,
                config: &mut config,
                flows: &mut flows,
                policy: &mut policy,
                ebpf: &mut ebpf,
            }
        };
    }
    let signal_name = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = stats::read(&counters)?;
                print(&args, &iface, &now, &before, before_at.elapsed());
                before = now;
                before_at = Instant::now();
            }
            guard = logger.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            guard = events.readable_mut() => {
                let mut guard = guard?;
                while let Some(record) = guard.get_inner_mut().next() {
                    if let Some(event) = flows.on_record(&record)
                        && event.kind == event_kind::VALIDATED
                    {
                        if args.json {
                            output(&args, &flow_events::handshake_json(&event));
                        } else {
                            info!("{}", flow_events::handshake_text(&event));
                        }
                    }
                }
                guard.clear_ready();
            }
            _ = flow_ticker.tick() => flows.on_tick(),
            _ = policy_ticker.tick() => {
                if let Err(error) = policy.on_tick(unix_now()) {
                    warn!("policy round: {error:#}");
                }
                if args.policy.metrics_listen.is_some() {
                    let snapshot = snapshot(&stats::read(&counters)?, &flows, &policy);
                    if let Ok(mut text) = metrics_text.lock() {
                        *text = metrics::render(&snapshot);
                    }
                }
            }
            accepted = control_socket.accept() => {
                if let Ok((stream, _)) = accepted {
                    let stats = stats::json_line(&iface, &stats::read(&counters)?, &before, before_at.elapsed());
                    let mut live = live!(stats);
                    let (interval, policy_interval) = (live.args.interval, live.args.policy.policy_interval);
                    answer(stream, &mut live).await;
                    if live.detach {
                        break Exit::Detach("synguard detach");
                    }
                    retime(&args, (interval, policy_interval), &mut ticker, &mut policy_ticker);
                }
            }
            _ = sighup.recv() => {
                let mut live = live!(serde_json::Value::Null);
                let (interval, policy_interval) = (live.args.interval, live.args.policy.policy_interval);
                match live.reload() {
                    Ok(changes) => info!("SIGHUP: configuration reloaded; {}", describe_changes(&changes)),
                    Err(error) => warn!("SIGHUP: configuration not reloaded, nothing changed: {error:#}"),
                }
                retime(&args, (interval, policy_interval), &mut ticker, &mut policy_ticker);
            }
            _ = rotation.tick() => {
                if let Some(epoch) = keys.update(&mut ebpf, args.cookie_rotation)? {
                    info!("cookie keys rotated (epoch {epoch})");
                }
            }
            _ = sigint.recv() => break Exit::Detach("SIGINT"),
            _ = sigterm.recv() => break Exit::KeepGuarding,
        }
    };
    // The last partial interval, so the totals printed last are the final ones.
    print(
        &args,
        &iface,
        &stats::read(&counters)?,
        &before,
        before_at.elapsed(),
    );
    let _ = std::fs::remove_file(&control_path);
    let why = match signal_name {
        Exit::KeepGuarding => {
            info!(
                "SIGTERM: the controller stops, the programs keep guarding {iface} \
                 (`synguard run` adopts them, `synguard detach` removes them)"
            );
            return Ok(());
        }
        Exit::Detach(why) => why,
    };
    // The pins go first: the programs' own links are then the last references.
    pins.remove()?;
    object::program(&mut ebpf, object::GUARD_PROGRAM)?
        .detach(attached.link)
        .with_context(|| format!("detaching from {iface}"))?;
    if let Some((server_iface, link)) = server_link {
        object::program(&mut ebpf, object::SERVER_PROGRAM)?
            .detach(link)
            .with_context(|| format!("detaching from {server_iface}"))?;
    }
    info!("{why}: detached from {iface}");
    Ok(())
}

/// How the controller ends.
enum Exit {
    /// SIGINT or `synguard detach`: programs detached, pins removed.
    Detach(&'static str),
    /// SIGTERM: the programs stay attached with their pinned maps, for the next controller.
    KeepGuarding,
}

/// The state file of the cookie secret (when no key file gives it).
const SECRET_FILE: &str = "cookie-secret";
/// The state file of the manual key rotations (they shift the key schedule).
const ROTATIONS_FILE: &str = "key-rotations";

/// A ticker every `seconds`; a late tick is delayed, not followed by a burst of them.
fn ticker_every(seconds: f64) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(seconds));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// After `set` or a reload: the tickers of intervals that changed start anew.
fn retime(
    args: &RunArgs,
    (interval, policy_interval): (f64, f64),
    ticker: &mut tokio::time::Interval,
    policy_ticker: &mut tokio::time::Interval,
) {
    if args.interval != interval {
        *ticker = ticker_every(args.interval);
    }
    if args.policy.policy_interval != policy_interval {
        *policy_ticker = ticker_every(args.policy.policy_interval);
    }
}

/// One line of ours: to stdout, or to stderr when ExaBGP reads our stdout (`--exabgp -`).
fn output(args: &RunArgs, line: &dyn std::fmt::Display) {
    if matches!(args.policy.exabgp, Some(LineSink::Stdout)) {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The counter line of an interval.
fn print(args: &RunArgs, iface: &str, now: &Reading, before: &Reading, elapsed: Duration) {
    if args.json {
        output(args, &stats::json_line(iface, now, before, elapsed));
    } else {
        output(args, &stats::text_line(iface, now, before, elapsed));
    }
}

/// What a running guard can change: its settings and the parts that apply them.
struct Live<'a> {
    /// The counters now (a `synguard stats` answer).
    stats: serde_json::Value,
    /// `synguard detach` asked the controller to detach and exit.
    detach: bool,
    keys: &'a mut KeySchedule,
    pins: &'a Pins,
    args: &'a mut RunArgs,
    config: &'a mut Config,
    flows: &'a mut FlowControl,
    policy: &'a mut PolicyControl,
    ebpf: &'a mut aya::Ebpf,
}

/// A setting that changed: its key, and its value before and after.
#[derive(serde::Serialize)]
struct Change {
    key: String,
    old: Vec<String>,
    new: Vec<String>,
}

fn describe_changes(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no setting changed".to_string();
    }
    changes
        .iter()
        .map(|c| format!("{} {} -> {}", c.key, c.old.join(","), c.new.join(",")))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Live<'_> {
    /// `synguard set`: every key must be live and every value valid, or nothing changes.
    fn set(&mut self, settings: &[(String, String)]) -> Result<Vec<Change>> {
        for (key, _) in settings {
            if !self.config.effective.contains_key(key) {
                anyhow::bail!(
                    "unknown key {key:?}: the keys are synguard run's long flags (`synguard get` lists them)"
                );
            }
            if !LIVE_KEYS.contains(&key.as_str()) {
                anyhow::bail!(
                    "{key} cannot change while synguard runs: restart it (lists change with `synguard block|allow`)"
                );
            }
        }
        let before = self.config.effective.clone();
        let new = self.config.set(settings)?;
        self.apply(&new, &before)
    }

    /// The services become `wanted`: the ones gone are released, the new ones (and those whose
    /// mode changed) protected; checked as a whole first, so a clash changes nothing.
    fn reprotect(&mut self, wanted: &[ProtectedService]) -> Result<()> {
        guard_config::service_slots(wanted)?;
        let name = synguard::policy_control::service_name;
        for old in &self.args.protect {
            if !wanted.iter().any(|w| name(w) == name(old)) {
                self.policy.unprotect(old)?;
            }
        }
        for service in wanted {
            if !self.args.protect.contains(service) {
                self.policy.protect(service.clone())?;
            }
        }
        self.args.protect = wanted.to_vec();
        Ok(())
    }

    /// SIGHUP: the file again; settings that cannot change live wait for a restart.
    fn reload(&mut self) -> Result<Vec<Change>> {
        let (before, saved) = (self.config.effective.clone(), self.config.clone());
        let new = self.config.reload()?;
        self.apply(&new, &before)
            .inspect_err(|_| *self.config = saved)
    }

    fn apply(
        &mut self,
        new: &RunArgs,
        before: &std::collections::BTreeMap<String, crate::config::Setting>,
    ) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for (key, setting) in &self.config.effective {
            let old = before.get(key).map(|s| s.value.clone()).unwrap_or_default();
            if old == setting.value {
                continue;
            }
            // The services change live too (on reload; `synguard protect` does it by hand).
            if LIVE_KEYS.contains(&key.as_str()) || key == "protect" {
                changes.push(Change {
                    key: key.clone(),
                    old,
                    new: setting.value.clone(),
                });
            } else {
                warn!("{key} changed in the configuration: it takes effect when synguard restarts");
            }
        }
        if self.args.protect != new.protect {
            self.reprotect(&new.protect)?;
        }
        self.args.take_live(new);
        let args = &*self.args;
        log::set_max_level(args.log_level);
        self.flows.table.timers = args.timers();
        self.flows.table.early_data_window = args.early_data.into();
        guard_config::write_settings(self.ebpf, &args.syn_ack_settings(), cookie_counter_now())?;
        guard_config::write_policy_settings(self.ebpf, &args.policy.data_plane_settings())?;
        self.policy.policy.limits = args.policy.limits();
        self.policy.policy.rules = args.policy.rules();
        self.policy
            .set_auto(args.policy.auto_syn_rate, args.policy.auto_hold)?;
        self.policy.set_exports(args.policy.exports()?);
        for change in &changes {
            info!(
                "set {}: {} -> {}",
                change.key,
                change.old.join(","),
                change.new.join(",")
            );
        }
        Ok(changes)
    }
}

fn report_attach(iface: &str, attached: &attach::Attached) {
    if attached.adopted {
        info!(
            "took over the attachment left on {iface}: our programs swapped in, no frame unguarded"
        );
        return;
    }
    match &attached.fallback_reason {
        Some(reason) => warn!("attached to {iface} in generic mode: native refused ({reason})"),
        None => info!(
            "attached to {iface} in {} mode",
            attach::mode_name(attached.mode)
        ),
    }
}

/// What the metrics endpoint shows.
fn snapshot(reading: &Reading, flows: &FlowControl, policy: &PolicyControl) -> Snapshot {
    Snapshot {
        packets: synguard_common::counters::Counter::ALL
            .iter()
            .map(|counter| (counter.name(), reading.total.get(*counter)))
            .collect(),
        decisions: policy.decision_counts.clone(),
        flows: flows
            .table
            .histogram()
            .iter()
            .map(|(state, count)| (state.key(), *count as u64))
            .collect(),
        flow_events: flows.table.counts.named(),
        half_open: policy.policy.half_open_total(),
        blocks: policy.policy.blocks().count() as u64,
        allows: policy.policy.allows().count() as u64,
        services: policy.service_figures(),
    }
}

/// Answers one control request (a JSON object naming the request) with one JSON line.
async fn answer(stream: tokio::net::UnixStream, live: &mut Live<'_>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = BufReader::new(stream);
    let mut request = String::new();
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read_line(&mut request));
    if !matches!(read.await, Ok(Ok(_))) {
        return;
    }
    let reply = match serde_json::from_str::<serde_json::Value>(&request) {
        Ok(request) => handle(&request, live)
            .unwrap_or_else(|error| serde_json::json!({ "error": format!("{error:#}") })),
        Err(error) => serde_json::json!({ "error": format!("a request must be JSON: {error}") }),
    };
    let _ = stream
        .get_mut()
        .write_all(format!("{reply}\n").as_bytes())
        .await;
}

fn handle(request: &serde_json::Value, live: &mut Live<'_>) -> Result<serde_json::Value> {
    use serde_json::json;
    let (flows, policy) = (&*live.flows, &mut *live.policy);
    let prefix = || {
        request["prefix"]
            .as_str()
            .context("the request names no prefix")
            .and_then(parse_prefix)
    };
    Ok(match request["request"].as_str().unwrap_or("") {
        "flows" => flows.flows_json(),
        "stats" => live.stats.clone(),
        "keys_rotate" => {
            let epoch = live.keys.rotate(live.ebpf, live.args.cookie_rotation)?;
            live.pins
                .write(ROTATIONS_FILE, live.keys.extra.to_string().as_bytes())?;
            info!("cookie keys rotated by hand (epoch {epoch}); the previous key stays valid");
            json!({ "epoch": epoch })
        }
        "detach" => {
            live.detach = true;
            json!({ "detaching": true })
        }
        "status" => {
            let mut status = flows.status_json();
            status["policy"] = policy.status_json(10);
            status
        }
        "block_add" => json!({ "decision": policy.block(prefix()?, request["ttl"].as_u64())? }),
        "block_del" => json!({ "decision": policy.unblock(prefix()?)? }),
        "block_list" => policy.blocks_json(),
        "allow_add" => {
            let bypass = request["bypass"].as_bool().unwrap_or(false);
            json!({ "lifted": policy.allow(prefix()?, bypass)? })
        }
        "allow_del" => {
            policy.disallow(prefix()?)?;
            json!({ "removed": true })
        }
        "allow_list" => policy.allows_json(),
        "protect_add" => {
            let service: ProtectedService = request["service"]
                .as_str()
                .context("the request names no service")?
                .parse()?;
            policy.protect(service)?;
            policy.protected_json()
        }
        "protect_del" => {
            let service: ProtectedService = request["service"]
                .as_str()
                .context("the request names no service")?
                .parse()?;
            policy.unprotect(&service)?;
            policy.protected_json()
        }
        "protect_list" => policy.protected_json(),
        "get" => json!({
            "config": live.config.path,
            "settings": live.config.effective,
            "live": LIVE_KEYS,
        }),
        "set" => {
            let settings: Vec<(String, String)> =
                serde_json::from_value(request["settings"].clone())
                    .context("a set request carries [KEY, VALUE] pairs")?;
            json!({ "changed": live.set(&settings)? })
        }
        other => anyhow::bail!("unknown request {other:?}"),
    })
}
