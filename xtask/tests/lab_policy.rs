//! Lab tests of the policy: blocking a single-source flood (in XDP, within a policy interval,
//! until its TTL runs out), random-source floods and floods spoofing the real client's own
//! address answered with cookies and blocking no real client, auto mode's switch both ways, monitor mode that never drops, the operator's block
//! and allow commands, and the exports (JSON lines, Prometheus, ExaBGP).
//! They need root and the synguard binary: run them through `cargo xtask test`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{Guard, new_lab, synguard_cmd, wait_for};
use xtask::{
    cmd,
    lab::{CLIENT_ADDR, GUARD_SERVER_IFACE, Host, Lab, SERVER_PORT},
};

/// Spoofed flood source, inside the lab's range: its SYN-ACKs die in the client namespace.
const FLOODER: &str = "198.18.1.66";
const METRICS: &str = "127.0.0.1:9469";
const POLICY_INTERVAL: f64 = 0.5;

/// synguard protecting the lab's HTTP server in `mode`, its decisions on stdout.
fn guarded(lab: &Lab, mode: &str, extra: &[&str]) -> Guard {
    let protect = format!("198.19.1.0/24:{SERVER_PORT}:{mode}");
    let interval = POLICY_INTERVAL.to_string();
    let mut args = vec![
        "--protect",
        &protect,
        "--server-iface",
        GUARD_SERVER_IFACE,
        "--policy-interval",
        &interval,
        "--decision-log",
        "-",
    ];
    args.extend_from_slice(extra);
    Guard::start(lab, "native", &args)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A sample of the metrics endpoint (`name{labels}` as written), read with curl in the guard
/// namespace; None when absent.
fn metric(lab: &Lab, series: &str) -> Option<f64> {
    let text = cmd::stdout(&mut lab.exec(
        Host::Guard,
        "curl",
        [
            "-sS",
            "--max-time",
            "5",
            &format!("http://{METRICS}/metrics"),
        ],
    ))
    .unwrap();
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn decisions(guard: &Guard, action: &str) -> Vec<Value> {
    guard
        .records("decision")
        .into_iter()
        .filter(|d| d["action"] == action)
        .collect()
}

fn port() -> String {
    SERVER_PORT.to_string()
}

/// The real client gets every one of 5 pages while `flood` runs, and the guard answers the
/// flood with cookies: more than 10,000 beyond the `cookies` it had sent before.
fn pages_arrive_during(lab: &Lab, guard: &Guard, mut flood: std::process::Child, cookies: u64) {
    let mut fetched = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        fetched += usize::from(lab.page_arrives().unwrap());
    }
    flood.wait().unwrap();
    assert_eq!(fetched, 5, "pages during the flood");
    wait_for(
        "the flood's cookies counted",
        Duration::from_secs(5),
        || guard.total("tx_syn_cookie") > cookies + 10_000,
    );
}

#[test]
fn a_single_source_flood_is_blocked_in_xdp_until_its_block_expires() {
    let lab = new_lab();
    let exabgp = std::env::temp_dir().join(format!("synguard-exabgp-{}", lab.name));
    let exabgp_path = exabgp.to_str().unwrap().to_string();
    let guard = guarded(
        &lab,
        "always",
        &[
            "--max-syn-rate",
            "500",
            "--syn-burst",
            "500",
            // Half-open connections would trip too: this test is about the SYN rate.
            "--max-half-open",
            "0",
            "--block-ttl",
            "3",
            "--metrics-listen",
            METRICS,
            "--exabgp",
            &exabgp_path,
        ],
    );
    let started = unix_now();
    let mut flood = lab.flood(3, &["-S", "-a", FLOODER, "-p", &port()]).unwrap();
    wait_for("the flooder's block", Duration::from_secs(10), || {
        !decisions(&guard, "block").is_empty()
    });
    let block = decisions(&guard, "block").remove(0);
    assert_eq!(block["prefix"], format!("{FLOODER}/32"));
    assert_eq!(block["reason"], "syn_rate");
    assert!(block["measured"].as_f64().unwrap() > 500.0, "{block}");
    assert_eq!(block["limit"], 500.0);
    let decided = block["time"].as_f64().unwrap();
    // hping3 needs a moment to start; then one policy round sees the flood.
    assert!(
        decided - started < 1.0 + 2.0 * POLICY_INTERVAL,
        "blocked {:.2} s after the flood began",
        decided - started
    );
    assert!((block["until"].as_f64().unwrap() - decided - 3.0).abs() < 0.01);
    wait_for("the flood to drop in XDP", Duration::from_secs(5), || {
        guard.total("drop_blocked") > 1000
    });
    assert!(
        lab.page_arrives().unwrap(),
        "the real client is not blocked"
    );
    assert_eq!(
        metric(
            &lab,
            r#"synguard_decisions_total{action="block",reason="syn_rate"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&lab, "synguard_blocks"), Some(1.0));
    let list = synguard_cmd(&lab, &["block", "list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["blocks"][0]["prefix"], format!("{FLOODER}/32"));

    flood.wait().unwrap();
    wait_for("the block to expire", Duration::from_secs(10), || {
        !decisions(&guard, "unblock").is_empty()
    });
    let unblock = decisions(&guard, "unblock").remove(0);
    assert_eq!(unblock["reason"], "expired");
    assert!(unblock["time"].as_f64().unwrap() >= decided + 3.0);
    assert_eq!(metric(&lab, "synguard_blocks"), Some(0.0));
    // Unblocked, the same source's SYNs get cookies again, until it floods once more: then
    // its second block lasts twice as long.
    guard.settle();
    let cookies = guard.total("tx_syn_cookie");
    let mut again = lab.flood(2, &["-S", "-a", FLOODER, "-p", &port()]).unwrap();
    wait_for("the second block", Duration::from_secs(10), || {
        decisions(&guard, "block").len() == 2
    });
    again.wait().unwrap();
    assert!(
        guard.total("tx_syn_cookie") > cookies,
        "answered again once unblocked"
    );
    let second = decisions(&guard, "block").remove(1);
    assert_eq!(second["offence"], 2);
    let ttl = second["until"].as_f64().unwrap() - second["time"].as_f64().unwrap();
    assert!((ttl - 6.0).abs() < 0.01, "the TTL doubles: {second}");
    wait_for(
        "the second block to expire",
        Duration::from_secs(15),
        || decisions(&guard, "unblock").len() == 2,
    );

    // The ExaBGP lines follow the decision lines: wait for the last withdraw to be written.
    wait_for("the last withdraw line", Duration::from_secs(5), || {
        std::fs::read_to_string(&exabgp)
            .unwrap_or_default()
            .matches("withdraw")
            .count()
            >= 2
    });
    let lines = std::fs::read_to_string(&exabgp).unwrap();
    std::fs::remove_file(&exabgp).unwrap();
    assert_eq!(
        lines,
        format!(
            "announce route {FLOODER}/32 next-hop self community [65535:666]\nwithdraw route {FLOODER}/32\n"
        )
        .repeat(2)
    );
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(&format!("block {FLOODER}/32")), "{stderr}");
}

#[test]
fn a_random_source_flood_gets_cookies_and_blocks_no_real_client() {
    let lab = new_lab();
    let guard = guarded(&lab, "always", &[]);
    let cookies = guard.total("tx_syn_cookie");
    let flood = lab
        .flood(3, &["-S", "--rand-source", "-p", &port()])
        .unwrap();
    pages_arrive_during(&lab, &guard, flood, cookies);
    let client: std::net::IpAddr = CLIENT_ADDR.parse().unwrap();
    for block in decisions(&guard, "block") {
        let prefix: ipnet::IpNet = block["prefix"].as_str().unwrap().parse().unwrap();
        assert!(
            !prefix.contains(&client),
            "the real client was blocked: {block}"
        );
    }
    assert_eq!(guard.total("drop_blocked"), 0);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_flood_spoofing_a_real_clients_address_gets_cookies_and_blocks_nothing() {
    let lab = new_lab();
    let guard = guarded(&lab, "always", &[]);
    // The client completes a handshake: from now on SYNs in its name may be spoofed.
    assert!(lab.page_arrives().unwrap());
    let (cookies, over_rate) = (guard.total("tx_syn_cookie"), guard.total("drop_syn_rate"));
    let flood = lab
        .flood(3, &["-S", "-a", CLIENT_ADDR, "-p", &port()])
        .unwrap();
    pages_arrive_during(&lab, &guard, flood, cookies);
    // Without the vouching, the per-source bucket (1000/s) would drop nearly all of them.
    let answered = guard.total("tx_syn_cookie") - cookies;
    let dropped = guard.total("drop_syn_rate") - over_rate;
    assert!(
        dropped * 10 < answered,
        "{dropped} SYNs dropped by the bucket, {answered} answered"
    );
    // Its stack answers the flood's SYN-ACKs with RSTs, strays to the guard: no block either.
    assert!(guard.total("drop_stray_rst") > 1000);
    assert_eq!(decisions(&guard, "block"), Vec::<Value>::new());
    assert_eq!(guard.total("drop_blocked"), 0);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn auto_mode_switches_to_cookies_above_its_threshold_and_back() {
    let lab = new_lab();
    let guard = guarded(
        &lab,
        "auto=2000",
        &["--auto-hold", "1", "--max-syn-rate", "0"],
    );
    // Calm: straight through to the server, no cookie, the flow tracked all the same.
    assert!(lab.page_arrives().unwrap());
    wait_for(
        "the direct admission counted",
        Duration::from_secs(5),
        || guard.total("pass_admitted") >= 1,
    );
    assert_eq!(guard.total("tx_syn_cookie"), 0);
    let status = synguard_cmd(&lab, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["flows"]["counts"]["admitted"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(status["policy"]["services"][0]["mode"], "auto");

    let mut flood = lab
        .flood(3, &["-S", "--rand-source", "-p", &port()])
        .unwrap();
    wait_for("cookies on", Duration::from_secs(5), || {
        guard
            .records("auto_mode")
            .iter()
            .any(|r| r["cookies_on"] == true)
    });
    let on = guard.records("auto_mode").remove(0);
    assert!(on["syn_rate"].as_f64().unwrap() > 2000.0, "{on}");
    wait_for(
        "cookies answering the flood",
        Duration::from_secs(5),
        || guard.total("tx_syn_cookie") > 1000,
    );
    assert!(lab.page_arrives().unwrap(), "a client during the flood");
    flood.wait().unwrap();
    wait_for("cookies off", Duration::from_secs(10), || {
        guard
            .records("auto_mode")
            .iter()
            .any(|r| r["cookies_on"] == false)
    });
    guard.settle();
    let admitted = guard.total("pass_admitted");
    let cookies = guard.total("tx_syn_cookie");
    assert!(lab.page_arrives().unwrap());
    wait_for(
        "the next client admitted directly",
        Duration::from_secs(5),
        || guard.total("pass_admitted") > admitted,
    );
    assert_eq!(guard.total("tx_syn_cookie"), cookies, "no cookie once calm");
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn monitor_mode_reports_and_never_drops() {
    let lab = new_lab();
    let guard = guarded(
        &lab,
        "monitor",
        &["--max-syn-rate", "100", "--syn-burst", "100"],
    );
    let mut flood = lab.flood(2, &["-S", "-a", FLOODER, "-p", &port()]).unwrap();
    wait_for("the report", Duration::from_secs(10), || {
        !decisions(&guard, "report").is_empty()
    });
    assert_eq!(
        decisions(&guard, "report")[0]["prefix"],
        format!("{FLOODER}/32")
    );
    assert!(lab.page_arrives().unwrap());
    flood.wait().unwrap();
    wait_for("the flood counted", Duration::from_secs(5), || {
        guard.total("pass_monitored") > 1000
    });
    assert!(decisions(&guard, "block").is_empty());
    assert_eq!(guard.total("dropped"), 0, "{}", guard.totals());
    assert_eq!(guard.total("tx_syn_cookie"), 0);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn the_operator_blocks_and_allows_on_the_running_guard() {
    let lab = new_lab();
    let list = std::env::temp_dir().join(format!("synguard-blocks-{}", lab.name));
    std::fs::write(&list, "# static\n198.18.9.0/24\n").unwrap();
    let guard = guarded(&lab, "always", &["--block-file", list.to_str().unwrap()]);
    std::fs::remove_file(&list).unwrap();
    let listed = synguard_cmd(&lab, &["block", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("198.18.9.0/24"));

    let added = synguard_cmd(&lab, &["block", "add", CLIENT_ADDR, "--ttl", "60"]);
    assert!(added.status.success(), "{added:?}");
    assert!(
        !lab.page_arrives().unwrap(),
        "a blocked client gets nothing"
    );
    wait_for("its SYNs dropped in XDP", Duration::from_secs(3), || {
        guard.total("drop_blocked") > 0
    });
    let deleted = synguard_cmd(&lab, &["block", "del", CLIENT_ADDR]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(lab.page_arrives().unwrap(), "unblocked");

    // Allowed with bypass: no cookie for the client's SYNs.
    guard.settle();
    let cookies = guard.total("tx_syn_cookie");
    let allowed = synguard_cmd(&lab, &["allow", "add", "198.18.1.0/24", "--bypass"]);
    assert!(allowed.status.success(), "{allowed:?}");
    let admitted = guard.total("pass_admitted");
    assert!(lab.page_arrives().unwrap());
    wait_for(
        "the client admitted directly",
        Duration::from_secs(5),
        || guard.total("pass_admitted") > admitted,
    );
    assert_eq!(guard.total("tx_syn_cookie"), cookies);
    let refused = synguard_cmd(&lab, &["block", "add", CLIENT_ADDR]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("overlaps the allowlist"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let allows = synguard_cmd(&lab, &["allow", "list", "--json"]);
    let allows: Value = serde_json::from_slice(&allows.stdout).unwrap();
    assert_eq!(allows["allows"][0]["prefix"], "198.18.1.0/24");
    assert_eq!(allows["allows"][0]["bypass"], true);

    for (args, says) in [
        (
            vec!["block", "add", "198.18.1.300"],
            "not an address or a prefix",
        ),
        (vec!["block", "del", "198.18.7.7"], "is not blocked"),
        // Crossed options are the parser's to refuse: block and allow take their own.
        (
            vec!["allow", "add", "198.18.7.0/24", "--ttl", "5"],
            "unexpected argument '--ttl'",
        ),
        (
            vec!["block", "add", "198.18.7.0/24", "--bypass"],
            "unexpected argument '--bypass'",
        ),
    ] {
        let out = synguard_cmd(&lab, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}
