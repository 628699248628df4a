//! `synguard run`: load, attach, report counters every interval, detach on SIGINT/SIGTERM.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya_log::EbpfLogger;
use clap::Args;
use log::{LevelFilter, info, warn};
use synguard::{
    attach::{self, AttachMode},
    object, privilege,
    stats::{self, Reading},
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
    let mut ebpf = object::load(args.log_level)?;
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
