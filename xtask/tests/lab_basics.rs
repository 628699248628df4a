//! Lab tests: real kernel TCP from the client namespace to the server namespace through the
//! guard namespace, with synguard attached to the guard's client-facing veth.
//! They need root and the synguard binary: run them through `cargo xtask test`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use xtask::{
    cmd,
    lab::{self, GUARD_CLIENT_IFACE, Host, Lab, SERVER_ADDR},
    lab_server,
};

mod support;

use support::{Guard, new_lab, synguard_bin, wait_for};

fn http_get(lab: &Lab, path: &str) -> String {
    let url = format!("http://{SERVER_ADDR}/{path}");
    cmd::stdout(&mut lab.exec(Host::Client, "curl", ["-sS", "--max-time", "5", &url])).unwrap()
}

#[test]
fn connections_pass_through_the_guard_and_are_counted() {
    let lab = new_lab();
    let guard = Guard::start(&lab, "native", &[]);
    const CONNECTIONS: u64 = 20;
    for _ in 0..CONNECTIONS {
        assert_eq!(http_get(&lab, ""), lab_server::BODY);
    }
    // 100 kB answered: the client's ACKs stream through the guard too.
    assert_eq!(http_get(&lab, "bytes/100000").len(), 100_000);
    // Each connection sends at least SYN, ACK, request, FIN and a last ACK through the guard.
    wait_for(
        "the guard to count the connections",
        Duration::from_secs(10),
        || guard.total("pass_tcp") >= 5 * CONNECTIONS,
    );
    let totals = guard.totals();
    assert_eq!(totals["dropped"], 0);
    assert_eq!(totals["seen"], totals["passed"]);
    assert!(totals["ipv4"].as_u64() >= totals["pass_tcp"].as_u64());
    let (status, stderr) = guard.stop();
    assert!(status.success(), "synguard exited with {status}: {stderr}");
    assert!(
        stderr.contains("attached to to-client in native mode"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SIGINT: detached from to-client"),
        "{stderr}"
    );
    assert!(
        !lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap(),
        "program left attached"
    );
    // And the path still works without the guard.
    assert_eq!(http_get(&lab, ""), lab_server::BODY);
}

#[test]
fn generic_mode_works_too() {
    let lab = new_lab();
    let guard = Guard::start(&lab, "generic", &[]);
    assert_eq!(http_get(&lab, ""), lab_server::BODY);
    wait_for("the guard to count", Duration::from_secs(10), || {
        guard.total("pass_tcp") >= 5
    });
    // SIGTERM stops the controller and leaves the program guarding; `detach` removes it.
    let (status, stderr) = guard.stop_with(libc::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("in generic mode"), "{stderr}");
    assert!(
        stderr.contains("the programs keep guarding to-client"),
        "{stderr}"
    );
    assert!(lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap());
    assert_eq!(http_get(&lab, ""), lab_server::BODY);
    let bin = synguard_bin();
    let out = lab
        .exec(Host::Guard, bin.to_str().unwrap(), ["detach"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "detached from to-client (no controller was running)"
    );
    assert!(!lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap());
    let again = lab
        .exec(Host::Guard, bin.to_str().unwrap(), ["detach"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no synguard is attached"));
}

#[test]
fn malformed_segments_from_a_real_sender_are_dropped_and_logged() {
    let lab = new_lab();
    let guard = Guard::start(&lab, "native", &["--log-level", "debug"]);
    // hping3 writes a TCP data offset of 3 words (12 bytes): below the 20-byte minimum.
    const SENT: u64 = 5;
    let count = SENT.to_string();
    // hping3 exits 1 when nothing answers, which is the point here: check what it sent.
    let out = lab
        .exec(
            Host::Client,
            "hping3",
            [
                "-q",
                "-S",
                "-p",
                "80",
                "--tcpoff",
                "3",
                "-c",
                &count,
                "-i",
                "u20000",
                SERVER_ADDR,
            ],
        )
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains(&format!("{SENT} packets transmitted, 0 packets received")),
        "{report}"
    );
    wait_for("the guard to drop them", Duration::from_secs(10), || {
        guard.total("drop_bad_tcp_data_offset") >= SENT
    });
    let totals = guard.totals();
    assert_eq!(totals["dropped"], totals["drop_bad_tcp_data_offset"]);
    // Legitimate traffic is untouched meanwhile.
    assert_eq!(http_get(&lab, ""), lab_server::BODY);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
    // The XDP program's own debug log reached the controller through aya-log.
    assert!(
        stderr.contains("drop: drop_bad_tcp_data_offset"),
        "{stderr}"
    );
}

/// Runs synguard to completion with `args` in the guard namespace: (success, stderr).
#[test]
fn taking_a_lab_down_removes_what_a_killed_guard_left() {
    use std::os::unix::fs::MetadataExt;
    let lab = new_lab();
    let netns = format!("/run/netns/{}", lab.netns(Host::Guard));
    let prefix = format!("net{}-", std::fs::metadata(&netns).unwrap().ino());
    let left_behind = || -> Vec<std::path::PathBuf> {
        lab::GUARD_LEFTOVER_DIRS
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            .map(|entry| entry.path())
            .collect()
    };
    let guard = Guard::start(&lab, "native", &[]);
    let (status, _) = guard.stop_with(libc::SIGKILL);
    assert!(!status.success(), "killed");
    let left = left_behind();
    assert!(
        left.iter()
            .any(|path| path.extension().is_some_and(|e| e == "sock")),
        "the control socket: {left:?}"
    );
    assert!(left.iter().any(|path| path.is_dir()), "the pins: {left:?}");
    lab.down().unwrap();
    assert_eq!(left_behind(), Vec::<std::path::PathBuf>::new());
}

fn synguard_once(lab: &Lab, args: &[&str]) -> (bool, String) {
    let out = lab
        .exec(Host::Guard, synguard_bin().to_str().unwrap(), args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn attach_errors_are_one_line_and_change_nothing() {
    let lab = new_lab();
    let first = Guard::start(&lab, "native", &[]);

    let (ok, stderr) = synguard_once(&lab, &["run", "--iface", GUARD_CLIENT_IFACE]);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("a synguard already runs on to-client"),
        "{stderr}"
    );

    let (ok, stderr) = synguard_once(&lab, &["run", "--iface", "no-such-if"]);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("\"no-such-if\" does not exist"), "{stderr}");
    // Under systemd, journald reads the line's priority from its prefix (an error: 3).
    let out = lab
        .exec(
            Host::Guard,
            synguard_bin().to_str().unwrap(),
            ["run", "--iface", "no-such-if"],
        )
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("<3>synguard: interface \"no-such-if\" does not exist"),
        "{stderr}"
    );

    let (ok, stderr) = synguard_once(
        &lab,
        &["run", "--iface", GUARD_CLIENT_IFACE, "--interval", "0"],
    );
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("between 0.1 and 3600"), "{stderr}");

    // Bad protection and cookie settings: refused before anything is touched.
    for (args, says) in [
        (
            &["--protect", "198.19.1.2/33:80"][..],
            "not an address or prefix",
        ),
        (&["--protect", "198.19.1.2:0"][..], "not a port"),
        (
            &["--cookie-key-file", "/nonexistent/key"][..],
            "reading cookie key file",
        ),
        (&["--window-scale", "15"][..], "15 is not in 0..=14"),
        (&["--cookie-rotation", "1"][..], "1 is not in 10..=86400"),
    ] {
        let mut full = vec!["run", "--iface", "no-such-if"];
        full.extend_from_slice(args);
        let (ok, stderr) = synguard_once(&lab, &full);
        assert!(!ok, "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("does not exist"),
            "checked before the interface: {stderr}"
        );
    }

    // A start that fails after its first steps (the server side's interface is missing, found
    // only at attach) undoes them: no pins, no program left on the interface it would guard.
    let (ok, stderr) = synguard_once(
        &lab,
        &[
            "run",
            "--iface",
            xtask::lab::GUARD_SERVER_IFACE,
            "--server-iface",
            "no-such-if",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("\"no-such-if\" does not exist"), "{stderr}");
    assert!(
        !lab.has_xdp(Host::Guard, xtask::lab::GUARD_SERVER_IFACE)
            .unwrap()
    );
    let pins = std::fs::read_dir(format!("{}/synguard", xtask::lab::LAB_BPFFS))
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        pins.iter()
            .all(|name| !name.ends_with(xtask::lab::GUARD_SERVER_IFACE)),
        "{pins:?}"
    );

    // The first guard still runs and still counts.
    assert!(lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap());
    let before = first.total("pass_tcp");
    assert_eq!(http_get(&lab, ""), lab_server::BODY);
    wait_for(
        "the first guard to keep counting",
        Duration::from_secs(10),
        || first.total("pass_tcp") > before,
    );
    let (status, stderr) = first.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn without_root_privileges_run_refuses_with_a_hint() {
    let lab = new_lab();
    // setpriv drops every capability while staying uid 0, as an unprivileged container would.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.netns(Host::Guard),
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(synguard_bin())
        .args(["run", "--iface", GUARD_CLIENT_IFACE])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs CAP_NET_ADMIN and CAP_BPF"),
        "{stderr}"
    );
    assert!(!lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap());
}

/// The options of the first SYN tcpdump prints: (source port, mss, wscale, sackOK, TS).
fn syn_options(tcpdump_line: &str) -> (u16, Option<u64>, Option<u64>, bool, bool) {
    // e.g. "198.18.1.2.40000 > 198.19.1.2.80: Flags [S], seq 1, win 64240, options
    //       [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0"
    let source = tcpdump_line
        .split(" > ")
        .next()
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap();
    let options = tcpdump_line
        .split("options [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or("");
    let value = |name: &str| {
        options
            .split(',')
            .find_map(|o| o.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    (
        source.trim().parse().unwrap(),
        value("mss "),
        value("wscale "),
        options.contains("sackOK"),
        options.contains("TS val"),
    )
}

#[test]
fn a_real_linux_client_completes_the_handshake_with_our_cookie() {
    let lab = new_lab();
    let protect = format!("{SERVER_ADDR}/32:80");
    let guard = Guard::start(&lab, "native", &["--protect", &protect]);
    // Linux defaults, then no timestamps (options ride in the cookie alone), then nothing
    // but the MSS.
    let variants: [&[&str]; 3] = [
        &[],
        &["net.ipv4.tcp_timestamps=0"],
        &[
            "net.ipv4.tcp_timestamps=0",
            "net.ipv4.tcp_sack=0",
            "net.ipv4.tcp_window_scaling=0",
        ],
    ];
    for (round, sysctls) in variants.iter().enumerate() {
        for sysctl in *sysctls {
            cmd::output(&mut lab.exec(Host::Client, "sysctl", ["-qw", sysctl])).unwrap();
        }
        // Capture the client's own SYN as it leaves, to know its real options.
        let mut capture = lab
            .exec(
                Host::Client,
                "tcpdump",
                [
                    "-i",
                    lab::PEER_IFACE,
                    "-n",
                    "-v",
                    "-l",
                    "-c",
                    "1",
                    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut capture_err = BufReader::new(capture.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            assert!(
                capture_err.read_line(&mut line).unwrap() > 0,
                "tcpdump quit: {line}"
            );
        }
        // bash's /dev/tcp: connect() returns once the kernel accepted our SYN-ACK and acked it.
        let connect = lab
            .exec(
                Host::Client,
                "timeout",
                [
                    "5",
                    "bash",
                    "-c",
                    &format!("exec 3<>/dev/tcp/{SERVER_ADDR}/80"),
                ],
            )
            .output()
            .unwrap();
        assert!(
            connect.status.success(),
            "round {round}: connect failed: {connect:?}"
        );
        let printed = capture.wait_with_output().unwrap();
        let printed = String::from_utf8_lossy(&printed.stdout).replace('\n', " ");
        let (port, mss, wscale, sack, ts) = syn_options(&printed);
        assert_eq!(ts, round == 0, "round {round}: {printed}");
        wait_for("the handshake event", Duration::from_secs(10), || {
            guard.handshake(port).is_some()
        });
        let event = guard.handshake(port).unwrap();
        assert_eq!(
            event["mss"].as_u64(),
            mss,
            "round {round}: {event} vs {printed}"
        );
        assert_eq!(
            event["window_scale"].as_u64(),
            wscale,
            "round {round}: {event} vs {printed}"
        );
        assert_eq!(
            event["sack_permitted"].as_bool(),
            Some(sack),
            "round {round}"
        );
        assert_eq!(event["timestamps"].as_bool(), Some(ts), "round {round}");
        assert_eq!(event["server"], format!("{SERVER_ADDR}:80"));
    }
    // Counter lines come every 0.2 s: wait for the one that includes the last handshake.
    wait_for(
        "the counters to include all three",
        Duration::from_secs(5),
        || guard.total("cookie_valid") >= 3,
    );
    assert_eq!(
        guard.total("drop_rewrite_failed"),
        0,
        "every third ACK became a SYN"
    );
    assert_eq!(guard.total("tx_syn_cookie"), 3);
    assert_eq!(guard.total("cookie_valid"), 3);
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}
