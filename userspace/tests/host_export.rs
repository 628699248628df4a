//! Decision records, ExaBGP lines and the Prometheus text, each parsed back and checked.

use std::collections::{BTreeMap, BTreeSet};

use synguard_common::counters::Counter as DataPlaneCounter;

use synguard::{
    control::protocol::ServiceStatus,
    export::lines::{ExabgpStyle, LineSink, decision_json, exabgp_line},
    export::metrics::{Snapshot, render},
    flows::table::FlowCounts,
    flows::tcp_state::State,
    policy::engine::{Decision, Outcome, Reason},
};

fn block(prefix: &str) -> Decision {
    Decision {
        time: 1_700_000_000.25,
        action: Outcome::Block,
        prefix: prefix.parse().unwrap(),
        reason: Reason::SynRate,
        service: 1,
        measured: 52000.0,
        limit: 1000.0,
        until: Some(1_700_000_060.25),
        offence: 2,
    }
}

#[test]
fn decisions_are_json_records() {
    let line = decision_json(&block("198.18.0.66/32")).to_string();
    let back: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(back["type"], "decision");
    assert_eq!(back["action"], "block");
    assert_eq!(back["prefix"], "198.18.0.66/32");
    assert_eq!(back["reason"], "syn_rate");
    assert_eq!(back["measured"], 52000.0);
    assert_eq!(back["limit"], 1000.0);
    assert_eq!(back["until"], 1_700_000_060.25);
    assert_eq!(back["offence"], 2);
    assert_eq!(back["service"], 1);
    let lifted = Decision {
        action: Outcome::Unblock,
        reason: Reason::Expired,
        until: None,
        ..block("2001:db8::66/128")
    };
    let back = decision_json(&lifted);
    assert_eq!(back["until"], serde_json::Value::Null);
    assert_eq!(back["prefix"], "2001:db8::66/128");
}

#[test]
fn exabgp_announces_blocks_and_withdraws_them() {
    let blackhole: ExabgpStyle = "blackhole".parse().unwrap();
    let via: ExabgpStyle = "blackhole=192.0.2.1".parse().unwrap();
    let flowspec: ExabgpStyle = "flowspec".parse().unwrap();
    let blocked = block("198.18.0.66/32");
    let lifted = Decision {
        action: Outcome::Unblock,
        ..blocked.clone()
    };
    assert_eq!(
        exabgp_line(&blocked, &blackhole).unwrap(),
        "announce route 198.18.0.66/32 next-hop self community [65535:666]"
    );
    assert_eq!(
        exabgp_line(&blocked, &via).unwrap(),
        "announce route 198.18.0.66/32 next-hop 192.0.2.1 community [65535:666]"
    );
    assert_eq!(
        exabgp_line(&lifted, &via).unwrap(),
        "withdraw route 198.18.0.66/32"
    );
    assert_eq!(
        exabgp_line(&block("2001:db8::/64"), &flowspec).unwrap(),
        "announce flow route { match { source 2001:db8::/64; } then { discard; } }"
    );
    assert_eq!(
        exabgp_line(&lifted, &flowspec).unwrap(),
        "withdraw flow route { match { source 198.18.0.66/32; } then { discard; } }"
    );
    let report = Decision {
        action: Outcome::Report,
        ..blocked
    };
    assert_eq!(
        exabgp_line(&report, &blackhole),
        None,
        "monitor mode acts nowhere"
    );
    for bad in ["bgp", "blackhole=router1", ""] {
        let error = bad.parse::<ExabgpStyle>().unwrap_err().to_string();
        assert!(error.contains("blackhole"), "{bad}: {error}");
    }
}

#[test]
fn the_line_log_follows_a_rotation() {
    let dir = std::env::temp_dir().join(format!("synguard-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("decisions.jsonl");
    let sink: LineSink = path.to_str().unwrap().parse().unwrap();
    sink.check().unwrap();
    sink.write_lines(&["one".into(), "two".into()]).unwrap();
    std::fs::rename(&path, dir.join("decisions.jsonl.1")).unwrap();
    sink.write_lines(&["three".into()]).unwrap();
    let rotated = std::fs::read_to_string(dir.join("decisions.jsonl.1")).unwrap();
    let fresh = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(rotated, "one\ntwo\n");
    assert_eq!(fresh, "three\n");
    let error = "/nonexistent-dir/x.log"
        .parse::<LineSink>()
        .unwrap()
        .check()
        .unwrap_err();
    assert!(format!("{error:#}").contains("/nonexistent-dir/x.log"));
    assert_eq!("-".parse::<LineSink>().unwrap(), LineSink::Stdout);
}

#[test]
fn a_pipe_nobody_reads_is_refused_at_once() {
    let path = std::env::temp_dir().join(format!("synguard-fifo-{}", std::process::id()));
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let sink: LineSink = path.to_str().unwrap().parse().unwrap();
    let error = format!("{:#}", sink.check().unwrap_err());
    assert!(error.contains("nobody reads the pipe"), "{error}");
    // With a reader, lines arrive.
    let reader = std::thread::spawn({
        let path = path.clone();
        move || std::fs::read_to_string(path).unwrap()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sink.write_lines(&["announce".into()]).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never opened"
        );
        std::thread::yield_now();
    }
    assert_eq!(reader.join().unwrap(), "announce\n");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn metrics_parse_back() {
    let mut decisions = BTreeMap::new();
    decisions.insert((Outcome::Block, Reason::SynRate), 3);
    decisions.insert((Outcome::Unblock, Reason::Expired), 2);
    let snapshot = Snapshot {
        packets: vec![
            (DataPlaneCounter::Seen, 1000),
            (DataPlaneCounter::Passed, 700),
            (DataPlaneCounter::Dropped, 300),
            (DataPlaneCounter::Ipv4, 990),
            (DataPlaneCounter::DropBlocked, 250),
            (DataPlaneCounter::PassTcp, 750),
        ],
        decisions,
        flows: vec![("established", 7), ("time_wait", 2)],
        flow_events: FlowCounts {
            backend_timeouts: 4,
            early_data_sent: 9,
            ..FlowCounts::default()
        }
        .named(),
        half_open: 12.5,
        blocks: 1,
        allows: 2,
        services: vec![ServiceStatus {
            service: "198.19.1.2/32:80".into(),
            mode: "auto".into(),
            syn_rate: Some(1234.5),
            cookies_on: true,
            syns: 5000,
            cookies_sent: 4000,
            admitted: 1000,
        }],
    };
    let text = render(&snapshot);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("{name} {labels:?} missing from:\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    // Aggregates and reasons in separate families: a sum within one counts each frame once.
    assert_eq!(value("synguard_frames_seen_total", &[]), 1000.0);
    assert_eq!(
        value("synguard_frames_total", &[("action", "dropped")]),
        300.0
    );
    assert_eq!(
        value(
            "synguard_frame_reasons_total",
            &[("reason", "drop_blocked")]
        ),
        250.0
    );
    assert_eq!(
        value("synguard_frames_by_family_total", &[("family", "ipv4")]),
        990.0
    );
    let family_of = |name: &str| -> Vec<String> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .flat_map(|s| s.labels.values().cloned().collect::<Vec<_>>())
            .collect()
    };
    for aggregate in ["seen", "passed", "dropped", "ipv4"] {
        assert!(
            !family_of("synguard_frame_reasons_total").contains(&aggregate.to_string()),
            "{aggregate} is no reason"
        );
    }
    let layout = synguard_common::maps::MAP_LAYOUT_VERSION.to_string();
    assert_eq!(
        value("synguard_build_info", &[("map_layout", layout.as_str())]),
        1.0
    );
    assert_eq!(
        value(
            "synguard_decisions_total",
            &[("action", "block"), ("reason", "syn_rate")]
        ),
        3.0
    );
    assert_eq!(value("synguard_flows", &[("state", "established")]), 7.0);
    assert_eq!(
        value(
            "synguard_flow_events_total",
            &[("event", "backend_timeouts")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "synguard_flow_events_total",
            &[("event", "early_data_sent")]
        ),
        9.0
    );
    assert_eq!(
        value("synguard_flow_events_total", &[("event", "joined")]),
        0.0
    );
    assert_eq!(value("synguard_half_open", &[]), 12.5);
    assert_eq!(value("synguard_blocks", &[]), 1.0);
    assert_eq!(value("synguard_allows", &[]), 2.0);
    let service = [("service", "198.19.1.2/32:80"), ("mode", "auto")];
    assert!(
        !text.contains("service_syn_rate"),
        "no rate gauge duplicates a counter"
    );
    assert_eq!(value("synguard_service_cookies_on", &service), 1.0);
    assert_eq!(value("synguard_service_admitted_total", &service), 1000.0);
}

/// Every sample a controller can export: every counter, decision, state, event and a service.
fn full_scrape() -> prometheus_parse::Scrape {
    let mut decisions = BTreeMap::new();
    for outcome in Outcome::ALL {
        for reason in Reason::ALL {
            decisions.insert((outcome, reason), 1);
        }
    }
    let snapshot = Snapshot {
        packets: DataPlaneCounter::ALL.iter().map(|c| (*c, 1)).collect(),
        decisions,
        flows: State::ALL.iter().map(|s| (s.key(), 1)).collect(),
        flow_events: FlowCounts::default().named(),
        half_open: 1.0,
        blocks: 1,
        allows: 1,
        services: vec![ServiceStatus {
            service: "198.19.1.2/32:80".into(),
            mode: "auto".into(),
            ..ServiceStatus::default()
        }],
    };
    let text = render(&snapshot);
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// `name{label="value",...}` selectors in a rule or dashboard text (regex matchers, `=~`,
/// name a metric but no value to check).
fn selectors(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("synguard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut labels = Vec::new();
        if let Some(inner) = tail[end..].strip_prefix('{') {
            let close = inner.find('}').expect("a closed selector");
            for matcher in inner[..close].split(',') {
                if let Some((label, value)) = matcher.split_once("=\"")
                    && !label.ends_with('~')
                    && !label.ends_with('!')
                {
                    labels.push((
                        label.trim().to_string(),
                        value.trim_end_matches('"').to_string(),
                    ));
                }
            }
        }
        found.push((name, labels));
        rest = &tail[end..];
    }
    found
}

#[test]
fn the_dashboard_and_the_alert_rules_name_only_metrics_that_exist() {
    let scrape = full_scrape();
    let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/");
    for file in ["grafana-dashboard.json", "prometheus-alerts.yml"] {
        let text = std::fs::read_to_string(format!("{root}{file}")).unwrap();
        let found = selectors(&text);
        assert!(found.len() >= 5, "{file} names metrics");
        for (name, labels) in found {
            assert!(
                names.contains(name.as_str()),
                "{file}: {name} is no metric of ours"
            );
            for (label, value) in labels {
                assert!(
                    scrape
                        .samples
                        .iter()
                        .any(|s| s.metric == name && s.labels.get(&label) == Some(value.as_str())),
                    "{file}: {name}{{{label}=\"{value}\"}} is never exported"
                );
            }
        }
    }
}
