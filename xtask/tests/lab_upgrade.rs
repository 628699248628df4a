//! Upgrade in place: a running guard of one build is taken over by another build with the
//! same map layout, without detaching; live connections, blocks and counters carry over and
//! the interface never runs without a guard program. A guard of another layout is refused in
//! one line and left running. Needs root and both builds (`cargo xtask test` makes them).

use std::{path::PathBuf, time::Duration};

use xtask::lab::{GUARD_CLIENT_IFACE, GUARD_SERVER_IFACE, Host};

mod support;

use support::{Guard, new_lab, synguard_bin, synguard_cmd, wait_for};

const ECHO_PORT: u16 = 5000;

fn newer_build() -> PathBuf {
    std::env::var_os("SYNGUARD_BIN_B")
        .map(PathBuf::from)
        .expect("SYNGUARD_BIN_B is not set: run the lab tests through `cargo xtask test`")
}

fn version(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The map layout a `--version` line names ("... (map layout N, build ...)").
fn map_layout(version: &str) -> String {
    version
        .split("map layout ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .unwrap_or_else(|| panic!("no map layout in {version:?}"))
        .to_string()
}

#[test]
fn a_newer_build_takes_over_in_place_keeping_flows_blocks_and_counters() {
    let (a, b) = (version(&synguard_bin()), version(&newer_build()));
    assert_eq!(map_layout(&a), map_layout(&b), "{a} / {b}");
    assert_ne!(a, b, "two builds");

    let lab = new_lab();
    let protect = format!("198.19.1.0/24:{ECHO_PORT}");
    let args = [
        "--protect",
        protect.as_str(),
        "--server-iface",
        GUARD_SERVER_IFACE,
        "--max-syn-rate",
        "0",
        "--max-half-open",
        "0",
    ];
    let first = Guard::start(&lab, "native", &args);
    let sessions = support::EchoSessions::open(&lab, ECHO_PORT, 3);
    let out = synguard_cmd(&lab, &["block", "add", "198.18.9.0/24"]);
    assert!(out.status.success(), "{out:?}");
    first.settle();
    let seen_before = first.total("seen");

    // The old build's controller stops (SIGTERM): its programs go on guarding.
    let (status, _) = first.stop_with(libc::SIGTERM);
    assert!(status.success());
    assert!(lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap());
    let second = Guard::start_build(&lab, &newer_build(), "native", &args);
    wait_for("the upgrade", Duration::from_secs(10), || {
        let stderr = second.stderr();
        stderr.contains("upgrading in place")
            && stderr.contains("adopted 3 flows")
            && stderr.contains("took over the attachment")
    });
    let stderr = second.stderr();
    assert!(stderr.contains("restored 1 blocks"), "{stderr}");
    assert!(lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap());
    second.settle();
    assert!(second.total("seen") >= seen_before, "the counters go on");
    let blocks =
        String::from_utf8_lossy(&synguard_cmd(&lab, &["block", "list"]).stdout).to_string();
    assert!(blocks.contains("198.18.9.0/24"), "{blocks}");

    // The connections opened under the old build carry 1 MiB each way and close.
    sessions.finish();

    // A build of another layout is refused in one line, and the running guard stays.
    let (status, _) = second.stop_with(libc::SIGTERM);
    assert!(status.success());
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", lab.netns(Host::Guard)))
            .unwrap()
            .ino()
    };
    let layout = format!("/run/synguard/net{ino}-{GUARD_CLIENT_IFACE}.d/map-layout");
    let recorded = map_layout(&version(&synguard_bin()));
    assert_eq!(std::fs::read_to_string(&layout).unwrap().trim(), recorded);
    std::fs::write(&layout, "999").unwrap();
    let out = lab
        .exec(
            Host::Guard,
            synguard_bin().to_str().unwrap(),
            [
                "run",
                "--iface",
                GUARD_CLIENT_IFACE,
                "--server-iface",
                GUARD_SERVER_IFACE,
            ],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.trim().lines().count() == 1 && stderr.contains("keeps its maps in layout 999"),
        "{stderr}"
    );
    assert!(
        lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap(),
        "left running"
    );
    std::fs::write(&layout, &recorded).unwrap();
    let out = synguard_cmd(&lab, &["detach"]);
    assert!(out.status.success(), "{out:?}");
}
