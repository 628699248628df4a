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
    flow_events,
    guard_config::{self, CookieSecret, ProtectedService},
    object, privilege,
    stats::{self, Reading},
};
use synguard::{
    control,
    export::LineSink,
    flow_control::FlowControl,
    flows::FlowTimers,
    metrics::{self, Snapshot},
    policy::Policy,
    policy_control::{PolicyControl, parse_prefix, unix_now},
    tcp_state::State,
};

use crate::policy_args::PolicyArgs;
use synguard_common::{
    maps::{FLOW_EVENTS_MAP, FLOWS_CAPACITY, FLOWS_MAP, event_kind},
    segment::SynAckSettings,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

#[derive(Args)]
pub struct RunArgs {
    /// Interface facing the clients (as in `ip link`).
    #[arg(long, short = 'i', value_name = "IFACE")]
    iface: String,
    /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    mode: AttachMode,
    /// Seconds between counter lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
    /// Print counter lines as JSON objects (one per line).
    #[arg(long)]
    json: bool,
    /// Log level, for the controller and for the XDP program's own log statements.
    #[arg(long, value_name = "LEVEL", default_value_t = LevelFilter::Info)]
    log_level: LevelFilter,
    /// Protect a service with SYN cookies (repeatable): CIDR:PORTS, e.g. 198.19.1.2/32:80,443
    /// or [2001:db8::/64]:8000-8100. Traffic to anything else passes untouched.
    #[arg(long, value_name = "CIDR:PORTS")]
    protect: Vec<ProtectedService>,
    /// File with the 128-bit cookie secret (32 hex digits) shared by every guard behind one
    /// ECMP group; without it, a random secret from the OS.
    #[arg(long, value_name = "PATH")]
    cookie_key_file: Option<PathBuf>,
    /// Seconds between cookie key rotations (a cookie stays valid across one rotation).
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86400))]
    cookie_rotation: u64,
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
    window_scale: u8,
    /// Interface facing the protected servers: validated flows are joined and forwarded
    /// there. Without it, handshakes validate but never reach a server.
    #[arg(long, value_name = "IFACE")]
    server_iface: Option<String>,
    /// Most validated flows the data plane tracks (least recently used ones go first).
    #[arg(long, value_name = "FLOWS", default_value_t = FLOWS_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    max_flows: u32,
    /// Maximum segment lifetime in seconds; TIME-WAIT lasts twice this.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0,
          value_parser = seconds_parser(0.1, 600.0))]
    msl: f64,
    /// Seconds a server may take to answer before its client is reset.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0,
          value_parser = seconds_parser(0.1, 120.0))]
    backend_timeout: f64,
    /// Idle timeout of a state (repeatable): STATE=SECONDS, 0 for never; states are
    /// syn_received, established, fin_wait_1, fin_wait_2, close_wait, closing, last_ack.
    #[arg(long, value_name = "STATE=SECONDS", value_parser = parse_idle_timeout)]
    idle_timeout: Vec<(State, u64)>,
    #[command(flatten)]
    policy: PolicyArgs,
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

pub fn run(args: RunArgs) -> Result<()> {
    env_logger::Builder::new()
        .filter_level(args.log_level)
        .format_timestamp_millis()
        .init();
    privilege::require_xdp_privileges("synguard run")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: RunArgs) -> Result<()> {
    // Everything the operator gave is checked before the kernel is touched.
    let secret = match &args.cookie_key_file {
        Some(path) => CookieSecret::from_file(path)?,
        None => CookieSecret::random()?,
    };
    let mut timers = FlowTimers {
        msl_ns: (args.msl * 1e9) as u64,
        backend_timeout_ns: (args.backend_timeout * 1e9) as u64,
        ..FlowTimers::default()
    };
    for (state, seconds) in &args.idle_timeout {
        timers.idle_ns[*state as usize] = seconds * 1_000_000_000;
    }
    if let Some(server_iface) = &args.server_iface
        && *server_iface == args.iface
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
    let mut ebpf = object::load_sized(args.log_level, args.max_flows)?;
    let (mut epoch, keys) = secret.keys_at(guard_config::unix_now(), args.cookie_rotation);
    guard_config::write_keys(&mut ebpf, &keys)?;
    guard_config::write_settings(
        &mut ebpf,
        &SynAckSettings {
            mss_v4: args.mss_v4,
            mss_v6: args.mss_v6,
            window_scale: args.window_scale,
            ..SynAckSettings::default()
        },
    )?;
    guard_config::write_protected(&mut ebpf, &args.protect)?;
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
        timers,
    )?;
    let logger = EbpfLogger::init(&mut ebpf).context("starting the eBPF log reader")?;
    // SAFETY: the logger owns the ring buffer fd and lives inside the AsyncFd until the end.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the eBPF log ring buffer")?;
    let counters = object::counters_map(&mut ebpf)?;
    object::load_stages(&mut ebpf)?;
    // The server side first: once the client side runs, validated flows need it.
    let server_link = match &args.server_iface {
        Some(server_iface) => {
            let program = object::load_xdp(&mut ebpf, object::SERVER_PROGRAM)?;
            let attached = attach::attach(program, server_iface, args.mode)?;
            report_attach(server_iface, &attached);
            Some((server_iface.clone(), attached.link))
        }
        None => None,
    };
    let program = object::load_xdp(&mut ebpf, object::GUARD_PROGRAM)?;
    let attached = match attach::attach(program, &args.iface, args.mode) {
        Ok(attached) => attached,
        Err(error) => {
            // Nothing may stay changed after an error.
            if let Some((server_iface, link)) = server_link {
                let _ = object::program(&mut ebpf, object::SERVER_PROGRAM)?.detach(link);
                let _ = server_iface;
            }
            return Err(error);
        }
    };
    report_attach(&args.iface, &attached);
    if server_link.is_none() {
        warn!("no --server-iface: handshakes validate but no flow reaches a server");
    }
    let control_path = control::socket_path(&args.iface);
    let _ = std::fs::create_dir_all(control::SOCKET_DIR);
    let _ = std::fs::remove_file(&control_path);
    let control_socket = tokio::net::UnixListener::bind(&control_path)
        .with_context(|| format!("creating the control socket {}", control_path.display()))?;
    let mut flow_ticker = tokio::time::interval(Duration::from_millis(100));
    let mut policy_ticker =
        tokio::time::interval(Duration::from_secs_f64(args.policy.policy_interval));
    policy_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut rotation = tokio::time::interval(Duration::from_secs(1));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut before = Reading::from_per_cpu(Vec::new());
    let mut before_at = Instant::now();
    // When ExaBGP reads our stdout (`--exabgp -`), our own lines go to stderr.
    let to_stderr = matches!(args.policy.exabgp, Some(LineSink::Stdout));
    let output = |line: &dyn std::fmt::Display| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let print = |now: &Reading, before: &Reading, elapsed: Duration| {
        if args.json {
            output(&stats::json_line(&args.iface, now, before, elapsed));
        } else {
            output(&stats::text_line(&args.iface, now, before, elapsed));
        }
    };
    let signal_name = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = stats::read(&counters)?;
                print(&now, &before, before_at.elapsed());
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
                            output(&flow_events::handshake_json(&event));
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
                    answer(stream, &flows, &mut policy).await;
                }
            }
            _ = rotation.tick() => {
                let (now_epoch, keys) = secret.keys_at(guard_config::unix_now(), args.cookie_rotation);
                if now_epoch != epoch {
                    guard_config::write_keys(&mut ebpf, &keys)?;
                    epoch = now_epoch;
                    info!("cookie keys rotated (epoch {epoch})");
                }
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
        }
    };
    // The last partial interval, so the totals printed last are the final ones.
    print(&stats::read(&counters)?, &before, before_at.elapsed());
    let _ = std::fs::remove_file(&control_path);
    object::program(&mut ebpf, object::GUARD_PROGRAM)?
        .detach(attached.link)
        .with_context(|| format!("detaching from {}", args.iface))?;
    if let Some((server_iface, link)) = server_link {
        object::program(&mut ebpf, object::SERVER_PROGRAM)?
            .detach(link)
            .with_context(|| format!("detaching from {server_iface}"))?;
    }
    info!("{signal_name}: detached from {}", args.iface);
    Ok(())
}

fn report_attach(iface: &str, attached: &attach::Attached) {
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
        half_open: policy.policy.half_open_total(),
        blocks: policy.policy.blocks().count() as u64,
        allows: policy.policy.allows().count() as u64,
        services: policy.service_figures(),
    }
}

/// Answers one control request (a JSON object naming the request) with one JSON line.
async fn answer(stream: tokio::net::UnixStream, flows: &FlowControl, policy: &mut PolicyControl) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = BufReader::new(stream);
    let mut request = String::new();
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read_line(&mut request));
    if !matches!(read.await, Ok(Ok(_))) {
        return;
    }
    let reply = match serde_json::from_str::<serde_json::Value>(&request) {
        Ok(request) => handle(&request, flows, policy)
            .unwrap_or_else(|error| serde_json::json!({ "error": format!("{error:#}") })),
        Err(error) => serde_json::json!({ "error": format!("a request must be JSON: {error}") }),
    };
    let _ = stream
        .get_mut()
        .write_all(format!("{reply}\n").as_bytes())
        .await;
}

fn handle(
    request: &serde_json::Value,
    flows: &FlowControl,
    policy: &mut PolicyControl,
) -> Result<serde_json::Value> {
    use serde_json::json;
    let prefix = || {
        request["prefix"]
            .as_str()
            .context("the request names no prefix")
            .and_then(parse_prefix)
    };
    Ok(match request["request"].as_str().unwrap_or("") {
        "flows" => flows.flows_json(),
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
        other => anyhow::bail!("unknown request {other:?}"),
    })
}
