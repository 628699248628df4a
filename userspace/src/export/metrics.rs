//! The Prometheus endpoint: `GET /metrics` answers the controller's latest snapshot in the
//! OpenMetrics text format (what Prometheus scrapes; `curl` reads it as well).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Result, anyhow};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

use synguard_common::{
    counters::{Counter as DataPlaneCounter, CounterGroup},
    maps::MAP_LAYOUT_VERSION,
};

use crate::{
    control::protocol::ServiceStatus,
    dataplane::{object::EBPF_OBJECT, persist::build_id},
    policy::engine::{Outcome, Reason},
};

/// Everything the endpoint shows, taken by the controller every interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Data-plane counters (running totals).
    pub packets: Vec<(DataPlaneCounter, u64)>,
    pub decisions: BTreeMap<(Outcome, Reason), u64>,
    /// Flows per TCP state of the server's end.
    pub flows: Vec<(&'static str, u64)>,
    /// The controller's flow events by name (`FlowCounts`: joins, backend timeouts, early
    /// data...), running totals.
    pub flow_events: Vec<(String, u64)>,
    pub half_open: f64,
    pub blocks: u64,
    pub allows: u64,
    pub services: Vec<ServiceStatus>,
}

type Labels = Vec<(&'static str, String)>;

/// A counter family with one label: a member per (label value, count).
fn counters_by<'a>(
    label: &'static str,
    counts: impl Iterator<Item = (&'a str, u64)>,
) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (value, count) in counts {
        family
            .get_or_create(&vec![(label, value.to_string())])
            .inc_by(count);
    }
    family
}

/// The snapshot in the OpenMetrics text format.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("synguard");
    let build_info = Family::<Labels, Gauge>::default();
    build_info
        .get_or_create(&vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("map_layout", MAP_LAYOUT_VERSION.to_string()),
            ("build", build_id(EBPF_OBJECT)),
        ])
        .set(1);
    registry.register(
        "build_info",
        "The running build: its version, its map layout and its eBPF object's build id",
        build_info,
    );
    let group = |wanted: CounterGroup| {
        snapshot
            .packets
            .iter()
            .filter(move |(counter, _)| counter.group() == wanted)
            .map(|(counter, value)| (counter.name(), *value))
    };
    let seen: Counter = Counter::default();
    seen.inc_by(group(CounterGroup::Seen).map(|(_, value)| value).sum());
    registry.register("frames_seen", "Frames the XDP programs ran on", seen);
    registry.register(
        "frames",
        "Frames by the XDP action taken (they add up to frames_seen)",
        counters_by("action", group(CounterGroup::Action)),
    );
    registry.register(
        "frame_reasons",
        "Frames by the reason of their verdict (docs/design.md's verdict table)",
        counters_by("reason", group(CounterGroup::Reason)),
    );
    registry.register(
        "frames_by_family",
        "Well-formed frames by IP family, and frames carrying VLAN tags",
        counters_by("family", group(CounterGroup::Family)),
    );
    let decisions = Family::<Labels, Counter>::default();
    for outcome in Outcome::ALL {
        for reason in Reason::ALL {
            let count = snapshot
                .decisions
                .get(&(outcome, reason))
                .copied()
                .unwrap_or(0);
            if count > 0 {
                decisions
                    .get_or_create(&vec![
                        ("action", outcome.name().to_string()),
                        ("reason", reason.name().to_string()),
                    ])
                    .inc_by(count);
            }
        }
    }
    registry.register(
        "decisions",
        "Policy decisions, by action and reason",
        decisions,
    );
    let flows = Family::<Labels, Gauge>::default();
    for (state, count) in &snapshot.flows {
        flows
            .get_or_create(&vec![("state", state.to_string())])
            .set(*count as i64);
    }
    registry.register(
        "flows",
        "Validated flows, by TCP state of the server's end",
        flows,
    );
    registry.register(
        "flow_events",
        "What the controller saw and did with validated flows, by event (`synguard status`)",
        counters_by(
            "event",
            snapshot
                .flow_events
                .iter()
                .map(|(event, count)| (event.as_str(), *count)),
        ),
    );
    let half_open = Gauge::<f64, AtomicU64>::default();
    half_open.set(snapshot.half_open);
    registry.register(
        "half_open",
        "Half-open connections of all tracked sources (cookies sent minus validated, decaying)",
        half_open,
    );
    let blocks = Gauge::<i64>::default();
    blocks.set(snapshot.blocks as i64);
    registry.register("blocks", "Prefixes blocked now", blocks);
    let allows = Gauge::<i64>::default();
    allows.set(snapshot.allows as i64);
    registry.register("allows", "Prefixes on the allowlist", allows);
    let cookies_on = Family::<Labels, Gauge>::default();
    let syns = Family::<Labels, Counter>::default();
    let cookies_sent = Family::<Labels, Counter>::default();
    let admitted = Family::<Labels, Counter>::default();
    for figures in &snapshot.services {
        let labels = vec![
            ("service", figures.service.clone()),
            ("mode", figures.mode.to_string()),
        ];
        cookies_on
            .get_or_create(&labels)
            .set(figures.cookies_on as i64);
        syns.get_or_create(&labels).inc_by(figures.syns);
        cookies_sent
            .get_or_create(&labels)
            .inc_by(figures.cookies_sent);
        admitted.get_or_create(&labels).inc_by(figures.admitted);
    }
    registry.register(
        "service_cookies_on",
        "1 while a service answers SYNs with cookies (always mode, or auto above its threshold)",
        cookies_on,
    );
    registry.register("service_syns", "SYNs to a protected service", syns);
    registry.register(
        "service_cookies_sent",
        "Cookie SYN-ACKs a protected service's clients got",
        cookies_sent,
    );
    registry.register(
        "service_admitted",
        "SYNs let straight through to a protected service",
        admitted,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The endpoint's latest text, shared between the controller and the HTTP thread.
pub type Shared = Arc<Mutex<String>>;

/// Listens on `listen` and answers `GET /metrics` from `shared` (on its own thread). Fails at
/// once when the address cannot be bound.
pub fn serve(listen: SocketAddr, shared: Shared) -> Result<()> {
    let server = tiny_http::Server::http(listen).map_err(|e| {
        anyhow!("cannot serve metrics on {listen}: {e} (pick a free address with --metrics-listen)")
    })?;
    let content_type = tiny_http::Header::from_bytes(
        "Content-Type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
    .map_err(|_| anyhow!("bad content type"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let path = request.url().split('?').next().unwrap_or("");
                let response = if path == "/metrics" {
                    let body = shared.lock().map(|text| text.clone()).unwrap_or_default();
                    tiny_http::Response::from_string(body).with_header(content_type.clone())
                } else {
                    tiny_http::Response::from_string("synguard serves /metrics\n")
                        .with_status_code(404)
                };
                let _ = request.respond(response);
            }
        })?;
    Ok(())
}
