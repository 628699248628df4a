//! `synguard run`, in phases: the settings checked (`check`), the object loaded or a running
//! guard adopted (`load_or_adopt`), the programs attached (`attach_both`), then served until
//! SIGINT or `synguard detach` (detached) or SIGTERM (left guarding). A start that fails
//! leaves nothing changed ([`StartRollback`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::{maps::RingBuf, programs::xdp::XdpLinkId};
use aya_log::EbpfLogger;
use log::{info, warn};
use sd_notify::NotifyState;
use synguard_common::maps::{
    EventKind, FLOW_EVENTS_MAP, FLOWS_MAP, FORGOTTEN_MAP, MAP_LAYOUT_VERSION,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    clock::{cookie_counter_now, unix_now},
    config::{file::Config, lists::ListEntry, run_args::RunArgs, service::service_slots},
    control::{server::answer, socket},
    daemon::live::{Live, describe_changes},
    dataplane::{
        attach,
        counters::{self, Reading},
        keys::{CookieSecret, KeySchedule},
        maps, object,
        persist::{self, CLIENT_LINK, Pins, ROTATIONS_FILE, SECRET_FILE, SERVER_LINK},
        privilege,
    },
    export::{
        lines::{Exports, LineSink},
        metrics::{self, Snapshot},
    },
    flows::{control::FlowControl, events, filter::FlowFilter},
    policy::{control::PolicyControl, engine::Policy},
};

/// `synguard run` with the flags given after `run` (the configuration file is read here).
pub fn run(cli: Vec<std::ffi::OsString>) -> Result<()> {
    let (args, config) = Config::load(cli)?;
    crate::daemon::journal::init_logger();
    log::set_max_level(args.live.log_level);
    privilege::require_xdp_privileges("synguard run")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(serve(args, config))
}

/// Tells systemd (`Type=notify`) where the daemon is; nothing without a service manager, and
/// a failure to tell it changes nothing of the guard.
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!("telling systemd {states:?}: {error}");
    }
}

/// Phase 1: everything the operator gave, checked before the kernel is touched.
pub struct Checked {
    iface: String,
    key_file_secret: Option<CookieSecret>,
    exports: Exports,
    allowlist: Vec<ListEntry>,
    blocklist: Vec<ListEntry>,
}

pub fn check(args: &RunArgs) -> Result<Checked> {
    let start = &args.start;
    let iface = start.iface.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "no interface: give --iface IFACE (or iface = \"IFACE\" in the configuration)"
        )
    })?;
    if start.server_iface.as_ref() == Some(&iface) {
        anyhow::bail!("--server-iface must differ from --iface: the guard sits between two links");
    }
    let key_file_secret = match &start.cookie_key_file {
        Some(path) => Some(CookieSecret::from_file(path)?),
        None => None,
    };
    service_slots(&start.protect)?;
    for iface in std::iter::once(&iface).chain(start.server_iface.as_ref()) {
        attach::require_interface(iface)?;
    }
    Ok(Checked {
        exports: args.live.policy.exports()?,
        allowlist: start.lists.allowlist()?,
        blocklist: start.lists.blocklist()?,
        key_file_secret,
        iface,
    })
}

/// Undoes a start that fails: the pins it created go, and with them (once the loaded object
/// is dropped too) every attachment it made. A guard it adopted is left as it was: it goes on
/// guarding.
struct StartRollback(Option<Pins>);

impl StartRollback {
    /// The start succeeded: nothing to undo.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StartRollback {
    fn drop(&mut self) {
        if let Some(pins) = self.0.take() {
            let _ = pins.remove();
        }
    }
}

/// Phase 2: the object loaded with its maps pinned (a running guard's adopted), the settings,
/// keys and lists written, the parts that own the maps built.
struct Loaded {
    ebpf: aya::Ebpf,
    pins: Pins,
    rollback: StartRollback,
    keys: KeySchedule,
    policy: PolicyControl,
    flows: FlowControl,
}

fn load_or_adopt(args: &RunArgs, checked: Checked) -> Result<Loaded> {
    let (start, live) = (&args.start, &args.live);
    let iface = &checked.iface;
    let pins = Pins::of(iface, &start.bpffs);
    pins.prepare(&start.bpffs)?;
    let adopting = pins.adoptable();
    let rollback = StartRollback((!adopting).then(|| pins.clone()));
    let build = persist::build_id(object::EBPF_OBJECT);
    if let Some(previous) = pins.claim(&build, MAP_LAYOUT_VERSION, adopting)? {
        info!(
            "upgrading in place on {iface}: build {previous} -> {build}, map layout \
             {MAP_LAYOUT_VERSION} kept: flows, blocks, keys and counters carry over"
        );
    }
    let secret = match checked.key_file_secret {
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
    let mut ebpf = object::load_pinned(live.log_level, start.max_flows, &pins.dir)?;
    let rotations = pins
        .read(ROTATIONS_FILE)?
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let mut keys = KeySchedule::new(secret, rotations);
    keys.update(&mut ebpf, live.cookie_rotation)?;
    maps::write_settings(&mut ebpf, &live.syn_ack_settings(), cookie_counter_now())?;
    maps::write_protected(&mut ebpf, &start.protect, live.policy.auto_syn_rate)?;
    maps::write_policy_settings(&mut ebpf, &live.policy.data_plane_settings())?;
    for service in &start.protect {
        info!(
            "protecting {} ({})",
            crate::config::service::service_name(service),
            service.mode.name()
        );
    }
    let mut policy = PolicyControl::new(
        &mut ebpf,
        Policy::new(live.policy.limits(), live.policy.rules()),
        &start.protect,
        live.policy.auto_syn_rate,
        live.policy.auto_hold,
        checked.exports,
        Some(pins.clone()),
    )?;
    for entry in &checked.allowlist {
        policy.allow(entry.prefix, entry.bypass)?;
    }
    for entry in &checked.blocklist {
        policy.block(entry.prefix, None)?;
    }
    let mut flows = FlowControl::new(
        ebpf.take_map(FLOWS_MAP)
            .context("flows map missing from the eBPF object")?,
        ebpf.take_map(FORGOTTEN_MAP)
            .context("forgotten flows map missing from the eBPF object")?,
        FlowFilter::take(&mut ebpf)?,
        live.timers(),
    )?;
    flows.table.early_data_window = live.early_data.into();
    if adopting {
        let adopted = flows.adopt_all();
        info!("adopted {adopted} flows from the guard left running on {iface}");
    }
    Ok(Loaded {
        ebpf,
        pins,
        rollback,
        keys,
        policy,
        flows,
    })
}

/// Phase 3: the programs attached, the server side first (once the client side runs,
/// validated flows need it). Their links are pinned; a failure here leaves nothing attached.
fn attach_both(args: &RunArgs, iface: &str, loaded: &mut Loaded) -> Result<Attachments> {
    let (ebpf, pins) = (&mut loaded.ebpf, &loaded.pins);
    object::load_stages(ebpf)?;
    let server = match &args.start.server_iface {
        Some(server_iface) => {
            let program = object::load_xdp(ebpf, object::SERVER_PROGRAM)?;
            let attached = attach::attach_pinned(
                program,
                server_iface,
                args.start.mode,
                &pins.link(SERVER_LINK),
            )?;
            report_attach(server_iface, &attached);
            Some((server_iface.clone(), attached.link))
        }
        None => None,
    };
    let program = object::load_xdp(ebpf, object::GUARD_PROGRAM)?;
    let client = attach::attach_pinned(program, iface, args.start.mode, &pins.link(CLIENT_LINK))?;
    report_attach(iface, &client);
    if server.is_none() {
        warn!("no --server-iface: handshakes validate but no flow reaches a server");
    }
    Ok(Attachments {
        client: client.link,
        server,
    })
}

/// The links phase 3 made.
struct Attachments {
    client: XdpLinkId,
    server: Option<(String, XdpLinkId)>,
}

async fn serve(mut args: RunArgs, mut config: Config) -> Result<()> {
    let checked = check(&args)?;
    let iface = checked.iface.clone();
    if std::os::unix::net::UnixStream::connect(socket::socket_path(&iface)).is_ok() {
        anyhow::bail!(
            "a synguard already runs on {iface}: stop it first (or tune it with `synguard set`)"
        );
    }
    let metrics_text = metrics::Shared::default();
    if let Some(listen) = args.start.lists.metrics_listen {
        metrics::serve(listen, metrics_text.clone())?;
        info!("metrics at http://{listen}/metrics");
    }
    let mut loaded = load_or_adopt(&args, checked)?;
    let attachments = attach_both(&args, &iface, &mut loaded)?;
    let Loaded {
        mut ebpf,
        pins,
        rollback,
        mut keys,
        mut policy,
        mut flows,
    } = loaded;
    let events = RingBuf::try_from(
        ebpf.take_map(FLOW_EVENTS_MAP)
            .context("flow event ring buffer missing from the eBPF object")?,
    )?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until the end.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the flow event ring buffer")?;
    let logger = EbpfLogger::init(&mut ebpf).context("starting the eBPF log reader")?;
    // SAFETY: the logger owns the ring buffer fd and lives inside the AsyncFd until the end.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the eBPF log ring buffer")?;
    let counters = object::counters_map(&mut ebpf)?;
    // Phase 4: serve.
    let control_path = socket::socket_path(&iface);
    let _ = std::fs::create_dir_all(socket::SOCKET_DIR);
    let _ = std::fs::remove_file(&control_path);
    let control_socket = tokio::net::UnixListener::bind(&control_path)
        .with_context(|| format!("creating the control socket {}", control_path.display()))?;
    socket::secure(&control_path)?;
    rollback.disarm();
    // systemd (Type=notify): ready once attached and listening.
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("guarding {iface}")),
    ]);
    let mut flow_ticker = tokio::time::interval(Duration::from_millis(100));
    let mut policy_ticker = ticker_every(args.live.policy.policy_interval);

    let mut rotation = tokio::time::interval(Duration::from_secs(1));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut ticker = ticker_every(args.live.interval);
    ticker.tick().await;
    let mut before = Reading::from_per_cpu(Vec::new());
    let mut before_at = Instant::now();
    // What `set`, `get`, a reload or a detach may change, borrowed for one request.
    macro_rules! live {
        () => {
            Live {
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
                let now = counters::read(&counters)?;
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
                        && event.kind == EventKind::Validated
                    {
                        if args.start.json {
                            output(&args, &events::handshake_json(&event.wire));
                        } else {
                            info!("{}", events::handshake_text(&event.wire));
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
                if args.start.lists.metrics_listen.is_some() {
                    let snapshot = snapshot(&counters::read(&counters)?, &flows, &policy);
                    if let Ok(mut text) = metrics_text.lock() {
                        *text = metrics::render(&snapshot);
                    }
                }
            }
            accepted = control_socket.accept() => {
                if let Ok((stream, _)) = accepted {
                    let stats = counters::stats(&iface, &counters::read(&counters)?, Some(&before), before_at.elapsed());
                    let mut live = live!();
                    let (interval, policy_interval) = (live.args.live.interval, live.args.live.policy.policy_interval);
                    answer(stream, &mut live, stats).await;
                    if live.detach {
                        break Exit::Detach("synguard detach");
                    }
                    retime(&args, (interval, policy_interval), &mut ticker, &mut policy_ticker);
                }
            }
            _ = sighup.recv() => {
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    notify(&[NotifyState::Reloading, now]);
                }
                let mut live = live!();
                let (interval, policy_interval) = (live.args.live.interval, live.args.live.policy.policy_interval);
                match live.reload() {
                    Ok(changes) => info!("SIGHUP: configuration reloaded; {}", describe_changes(&changes)),
                    Err(error) => warn!("SIGHUP: configuration not reloaded, nothing changed: {error:#}"),
                }
                retime(&args, (interval, policy_interval), &mut ticker, &mut policy_ticker);
                notify(&[NotifyState::Ready]);
            }
            _ = rotation.tick() => {
                if let Some(epoch) = keys.update(&mut ebpf, args.live.cookie_rotation)? {
                    info!("cookie keys rotated (epoch {epoch})");
                }
            }
            _ = sigint.recv() => break Exit::Detach("SIGINT"),
            _ = sigterm.recv() => break Exit::KeepGuarding,
        }
    };
    notify(&[NotifyState::Stopping]);
    // The last partial interval, so the totals printed last are the final ones.
    print(
        &args,
        &iface,
        &counters::read(&counters)?,
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
        .detach(attachments.client)
        .with_context(|| format!("detaching from {iface}"))?;
    if let Some((server_iface, link)) = attachments.server {
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
    if args.live.interval != interval {
        *ticker = ticker_every(args.live.interval);
    }
    if args.live.policy.policy_interval != policy_interval {
        *policy_ticker = ticker_every(args.live.policy.policy_interval);
    }
}

/// One line of ours: to stdout, or to stderr when ExaBGP reads our stdout (`--exabgp -`).
fn output(args: &RunArgs, line: &dyn std::fmt::Display) {
    if matches!(args.live.policy.exabgp, Some(LineSink::Stdout)) {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The counter line of an interval.
fn print(args: &RunArgs, iface: &str, now: &Reading, before: &Reading, elapsed: Duration) {
    if args.start.json {
        output(args, &counters::json_line(iface, now, before, elapsed));
    } else {
        output(args, &counters::text_line(iface, now, before, elapsed));
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
            .map(|counter| (*counter, reading.total.get(*counter)))
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
