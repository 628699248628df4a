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
use synguard_common::{maps::FLOW_EVENTS_MAP, segment::SynAckSettings};
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
    let mut ebpf = object::load(args.log_level)?;
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
    for service in &args.protect {
        info!("protecting {} ports {:?}", service.prefix, service.ports);
    }
    let handshakes = RingBuf::try_from(
        ebpf.take_map(FLOW_EVENTS_MAP)
            .context("handshake ring buffer missing from the eBPF object")?,
    )?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until the end.
    let mut handshakes =
        unsafe { AsyncFd::register_with_interest(handshakes, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the handshake ring buffer")?;
    let logger = EbpfLogger::init(&mut ebpf).context("starting the eBPF log reader")?;
    // SAFETY: the logger owns the ring buffer fd and lives inside the AsyncFd until the end.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the eBPF log ring buffer")?;
    let counters = object::counters_map(&mut ebpf)?;
    let program = object::load_xdp(&mut ebpf, object::GUARD_PROGRAM)?;
    let attached = attach::attach(program, &args.iface, args.mode)?;
    match &attached.fallback_reason {
        Some(reason) => warn!(
            "attached to {} in generic mode: native refused ({reason})",
            args.iface
        ),
        None => info!(
            "attached to {} in {} mode",
            args.iface,
            attach::mode_name(attached.mode)
        ),
    }

    let mut rotation = tokio::time::interval(Duration::from_secs(1));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut before = Reading::from_per_cpu(Vec::new());
    let mut before_at = Instant::now();
    let print = |now: &Reading, before: &Reading, elapsed: Duration| {
        if args.json {
            println!("{}", stats::json_line(&args.iface, now, before, elapsed));
        } else {
            println!("{}", stats::text_line(&args.iface, now, before, elapsed));
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
            guard = handshakes.readable_mut() => {
                let mut guard = guard?;
                while let Some(record) = guard.get_inner_mut().next() {
                    if let Some(event) = flow_events::decode(&record) && event.kind == synguard_common::maps::event_kind::VALIDATED {
                        if args.json {
                            println!("{}", flow_events::handshake_json(&event));
                        } else {
                            info!("{}", flow_events::handshake_text(&event));
                        }
                    }
                }
                guard.clear_ready();
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
    let program = object::guard_program(&mut ebpf)?;
    program
        .detach(attached.link)
        .with_context(|| format!("detaching from {}", args.iface))?;
    info!("{signal_name}: detached from {}", args.iface);
    Ok(())
}
