//! Lab tests of operating a running guard: `synguard set` changes what the data plane does in
//! the same run, `synguard get` shows where each value came from, SIGHUP reloads the
//! configuration file (and a bad file changes nothing).
//! They need root and the synguard binary: run them through `cargo xtask test`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Guard, new_lab, synguard_bin, synguard_cmd, wait_for};
use xtask::lab::{GUARD_SERVER_IFACE, Host, Lab, SERVER_PORT};

/// Spoofed flood source, inside the lab's range: its SYN-ACKs die in the client namespace.
const FLOODER: &str = "198.18.1.77";

fn get(lab: &Lab, key: &str) -> Value {
    let out = synguard_cmd(lab, &["get", key, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    value[key].clone()
}

fn protect() -> String {
    format!("198.19.1.0/24:{SERVER_PORT}")
}

/// synguard protecting the lab's HTTP port, joined to the server side; `extra` flags after.
fn guarded(lab: &Lab, extra: &[&str]) -> Guard {
    let protect = protect();
    let mut args = vec!["--protect", &protect, "--server-iface", GUARD_SERVER_IFACE];
    args.extend_from_slice(extra);
    Guard::start(lab, "native", &args)
}

#[test]
fn set_changes_the_data_plane_in_the_same_run() {
    let lab = new_lab();
    let guard = guarded(&lab, &["--max-syn-rate", "0", "--max-half-open", "0"]);
    let port = SERVER_PORT.to_string();
    let mut flood = lab.flood(1, &["-S", "-a", FLOODER, "-p", &port]).unwrap();
    flood.wait().unwrap();
    guard.settle();
    assert!(guard.total("tx_syn_cookie") > 1000, "{}", guard.totals());
    assert_eq!(guard.total("drop_syn_rate"), 0, "no per-source limit yet");

    let out = synguard_cmd(&lab, &["set", "max-syn-rate=100", "syn-burst=100"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("max-syn-rate: 0 -> 100"), "{said}");
    assert!(said.contains("syn-burst: 2000 -> 100"), "{said}");
    let setting = get(&lab, "max-syn-rate");
    assert_eq!(setting["value"][0], "100");
    assert_eq!(setting["source"], "set");
    assert_eq!(get(&lab, "block-ttl")["source"], "default");
    assert_eq!(get(&lab, "max-half-open")["source"], "flag");

    let mut flood = lab.flood(1, &["-S", "-a", FLOODER, "-p", &port]).unwrap();
    flood.wait().unwrap();
    wait_for(
        "SYNs over the new rate dropped",
        Duration::from_secs(5),
        || guard.total("drop_syn_rate") > 1000,
    );
    assert!(guard.stderr().contains("set max-syn-rate: 0 -> 100"));

    for (args, says) in [
        (vec!["set", "max-syn-rate=-1"], "max-syn-rate"),
        (vec!["set", "block-ttl=5", "msl=9999"], "msl"),
        (
            vec!["set", "iface=eth9"],
            "cannot change while synguard runs",
        ),
        (vec!["set", "speed=11"], "unknown key \"speed\""),
        (vec!["set", "max-syn-rate"], "is not KEY=VALUE"),
    ] {
        let out = synguard_cmd(&lab, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert_eq!(
        get(&lab, "block-ttl")["value"][0],
        "60",
        "a refused set changes nothing"
    );
    assert_eq!(get(&lab, "max-syn-rate")["value"][0], "100");
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn sighup_reloads_the_configuration_file() {
    let lab = new_lab();
    let path = std::env::temp_dir().join(format!("synguard-{}.toml", lab.name));
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    let protect = protect();
    write(&format!(
        "# synguard's settings\nprotect = [\"{protect}\"]\nserver-iface = \"{GUARD_SERVER_IFACE}\"\nblock-ttl = 30\nmax-syn-rate = 0\n"
    ));
    let guard = Guard::start(&lab, "native", &["--config", path.to_str().unwrap()]);
    assert!(lab.page_arrives().unwrap(), "the service the file protects");
    assert_eq!(get(&lab, "block-ttl")["value"][0], "30");
    assert_eq!(get(&lab, "block-ttl")["source"], "file");
    assert_eq!(get(&lab, "iface")["source"], "flag");

    write(&format!(
        "protect = [\"{protect}\", \"198.19.1.0/24:5000:monitor\"]\nserver-iface = \"{GUARD_SERVER_IFACE}\"\nblock-ttl = 45\nmax-syn-rate = 0\nmax-flows = 2048\n"
    ));
    guard.signal(libc::SIGHUP);
    wait_for("the reloaded value", Duration::from_secs(5), || {
        get(&lab, "block-ttl")["value"][0] == "45"
    });
    wait_for("the restart-only key noted", Duration::from_secs(5), || {
        guard
            .stderr()
            .contains("max-flows changed in the configuration")
    });
    let services: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["protect", "list", "--json"]).stdout).unwrap();
    assert_eq!(
        services["services"][1]["service"], "198.19.1.0/24:5000",
        "the reloaded file's new service: {services}"
    );
    assert_eq!(services["services"][1]["mode"], "monitor");

    write("block-ttl = 0\n");
    guard.signal(libc::SIGHUP);
    wait_for("the bad file refused", Duration::from_secs(5), || {
        guard.stderr().contains("configuration not reloaded")
    });
    assert_eq!(get(&lab, "block-ttl")["value"][0], "45", "nothing changed");
    assert!(lab.page_arrives().unwrap(), "still guarding");
    std::fs::remove_file(&path).unwrap();
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn stats_and_top_show_the_running_guard() {
    let lab = new_lab();
    let guard = guarded(
        &lab,
        &[
            "--max-half-open",
            "0",
            "--max-syn-rate",
            "200",
            "--syn-burst",
            "200",
        ],
    );
    assert!(lab.page_arrives().unwrap());
    let port = SERVER_PORT.to_string();
    let mut flood = lab.flood(1, &["-S", "-a", FLOODER, "-p", &port]).unwrap();
    flood.wait().unwrap();
    wait_for("the flooder's block", Duration::from_secs(10), || {
        String::from_utf8_lossy(&synguard_cmd(&lab, &["block", "list"]).stdout).contains(FLOODER)
    });

    let stats: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["stats", "--json"]).stdout).unwrap();
    assert!(
        stats["total"]["tx_syn_cookie"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let table = String::from_utf8_lossy(&synguard_cmd(&lab, &["stats"]).stdout).to_string();
    assert!(table.contains("drop_syn_rate"), "{table}");

    // Not a terminal: plain lines.
    let plain = synguard_cmd(&lab, &["top", "--count", "2", "--delay", "0.3"]);
    assert!(plain.status.success(), "{plain:?}");
    let lines = String::from_utf8_lossy(&plain.stdout).to_string();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(
        lines
            .lines()
            .all(|l| l.contains("SYN cookies") && l.contains("blocks 1")),
        "{lines}"
    );

    // In a pseudo-terminal (script(1)): the panels.
    let bin = synguard_bin();
    let command = format!(
        "stty rows 40 cols 160; {} top --count 2 --delay 0.3",
        bin.display()
    );
    let screen = lab
        .exec(Host::Guard, "script", ["-qfec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(screen.status.success(), "{screen:?}");
    let screen = screen_text(&String::from_utf8_lossy(&screen.stdout));
    for panel in [
        "Drops by reason",
        "Flows by state",
        "Top sources by half-open",
        "Blocks",
        "drop_syn_rate",
        FLOODER,
    ] {
        assert!(
            screen.contains(panel),
            "{panel} missing from the screen: {screen:?}"
        );
    }
    // A manual key rotation: new handshakes still complete.
    let rotated = synguard_cmd(&lab, &["keys", "rotate"]);
    assert!(rotated.status.success(), "{rotated:?}");
    assert!(String::from_utf8_lossy(&rotated.stdout).contains("cookie keys rotated"));
    assert!(lab.page_arrives().unwrap(), "cookies under the new key");
    let (status, stderr) = guard.stop();
    assert!(status.success(), "{stderr}");
}

/// What a terminal shows of `output`, roughly: escape sequences (ratatui moves the cursor
/// between words) become spaces, runs of spaces one.
fn screen_text(output: &str) -> String {
    let mut text = String::new();
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters, then the final byte (a letter).
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            text.push(' ');
        } else {
            text.push(c);
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn services_are_protected_and_released_on_the_running_guard() {
    let lab = new_lab();
    let protect = protect();
    let guard = guarded(&lab, &[]);
    let list: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["protect", "list", "--json"]).stdout).unwrap();
    assert_eq!(list["services"][0]["service"], protect.as_str());
    assert_eq!(list["services"][0]["mode"], "always");

    let out = synguard_cmd(&lab, &["protect", "del", &protect]);
    assert!(out.status.success(), "{out:?}");
    guard.settle();
    let cookies = guard.total("tx_syn_cookie");
    assert!(
        lab.page_arrives().unwrap(),
        "unprotected: the kernel routes it"
    );
    guard.settle();
    assert_eq!(guard.total("tx_syn_cookie"), cookies, "no cookie any more");

    let auto = format!("{protect}:auto");
    let out = synguard_cmd(&lab, &["protect", "add", &auto]);
    assert!(out.status.success(), "{out:?}");
    let admitted = guard.total("pass_admitted");
    assert!(lab.page_arrives().unwrap());
    wait_for(
        "the SYN admitted by the new service",
        Duration::from_secs(5),
        || guard.total("pass_admitted") > admitted,
    );

    // The same service in another mode: changed in place.
    let out = synguard_cmd(&lab, &["protect", "add", &format!("{protect}:monitor")]);
    assert!(out.status.success(), "{out:?}");
    let list: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["protect", "list", "--json"]).stdout).unwrap();
    assert_eq!(list["services"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["services"][0]["mode"], "monitor");
    let overlapping = format!("198.19.1.0/24:{SERVER_PORT},81");
    for (args, says) in [
        (
            vec!["protect", "add", overlapping.as_str()],
            "protected twice",
        ),
        (
            vec!["protect", "del", "198.19.1.0/24:8080"],
            "is not protected",
        ),
        (
            vec!["protect", "add", "198.19.1.0/24:80:turbo"],
            "not a mode",
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

/// The port of the test's own server (protected as well).
const ECHO_PORT: u16 = 5000;

#[test]
fn a_killed_controller_leaves_the_guard_running_and_the_next_adopts_everything() {
    let lab = new_lab();
    let protect = format!("198.19.1.0/24:{SERVER_PORT},{ECHO_PORT}");
    let args = [
        "--protect",
        protect.as_str(),
        "--server-iface",
        GUARD_SERVER_IFACE,
        "--msl",
        "1",
        "--max-half-open",
        "0",
        "--max-syn-rate",
        "0",
    ];
    let first = Guard::start(&lab, "native", &args);
    // Connections opened before the kill: each sends a line and gets it back, then waits.
    let sessions = support::EchoSessions::open(&lab, ECHO_PORT, 3);
    let out = synguard_cmd(&lab, &["block", "add", "198.18.9.0/24"]);
    assert!(out.status.success(), "{out:?}");
    let port = SERVER_PORT.to_string();
    let mut flood = lab.flood(6, &["-S", "--rand-source", "-p", &port]).unwrap();
    wait_for("the flood answered", Duration::from_secs(5), || {
        first.total("tx_syn_cookie") > 1000
    });
    let seen_before = first.total("seen");

    let (status, _) = first.stop_with(libc::SIGKILL);
    assert!(!status.success(), "killed");
    assert!(
        lab.has_xdp(Host::Guard, xtask::lab::GUARD_CLIENT_IFACE)
            .unwrap(),
        "the program keeps guarding"
    );
    // No controller: the data plane alone admits a new client through the flood.
    assert!(
        lab.page_arrives().unwrap(),
        "admitted with no controller running"
    );
    // No controller: the read verbs answer from the pinned maps, and say so.
    let out = synguard_cmd(&lab, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no controller runs for") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["reply"], "status");
    assert!(
        status["flows"]["states"]["ESTAB"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert!(status["flows"]["counts"].is_null(), "{status}");
    let flows: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["flows", "--json"]).stdout).unwrap();
    assert!(flows["flows"].as_array().unwrap().len() >= 3, "{flows}");
    let stats: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["stats", "--json"]).stdout).unwrap();
    assert!(
        stats["total"]["tx_syn_cookie"].as_u64().unwrap() > 1000,
        "{stats}"
    );
    assert!(
        stats["per_second"].is_null(),
        "one reading has no rate: {stats}"
    );
    let out = synguard_cmd(&lab, &["protect", "list", "--json"]);
    let services: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        services["services"][0]["service"],
        protect.as_str(),
        "{services}"
    );
    // ...and the lists change there too, for the next controller to take.
    let out = synguard_cmd(&lab, &["block", "add", "198.18.8.0/24"]);
    assert!(out.status.success(), "{out:?}");
    let blocks =
        String::from_utf8_lossy(&synguard_cmd(&lab, &["block", "list"]).stdout).to_string();
    assert!(
        blocks.contains("198.18.9.0/24") && blocks.contains("198.18.8.0/24"),
        "{blocks}"
    );
    // What needs a controller is refused in one line, changing nothing.
    for refused in [
        &["block", "add", "198.18.7.0/24", "--ttl", "5"][..],
        &["set", "max-syn-rate=5"],
    ] {
        let out = synguard_cmd(&lab, refused);
        assert!(!out.status.success(), "{refused:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().count() == 1 && stderr.contains("synguard run --iface"),
            "{refused:?}: {stderr}"
        );
    }

    let second = Guard::start(&lab, "native", &args);
    wait_for("the adoption", Duration::from_secs(10), || {
        second.stderr().contains("took over the attachment") && second.stderr().contains("adopted")
    });
    flood.wait().unwrap();
    let stderr = second.stderr();
    assert!(stderr.contains("restored 2 blocks"), "{stderr}");
    let status: Value =
        serde_json::from_slice(&synguard_cmd(&lab, &["status", "--json"]).stdout).unwrap();
    assert!(
        status["flows"]["states"]["ESTAB"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert!(
        status["flows"]["counts"]["adopted"].as_u64().unwrap() >= 3,
        "{status}"
    );
    let blocks =
        String::from_utf8_lossy(&synguard_cmd(&lab, &["block", "list"]).stdout).to_string();
    assert!(
        blocks.contains("198.18.9.0/24") && blocks.contains("198.18.8.0/24"),
        "{blocks}"
    );
    second.settle();
    assert!(second.total("seen") >= seen_before, "the counters go on");
    // The pinned maps read with bpftool, as an operator would.
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", lab.netns(Host::Guard)))
            .unwrap()
            .ino()
    };
    let pinned = format!(
        "{}/synguard/net{ino}-{}/BLOCKED",
        xtask::lab::LAB_BPFFS,
        xtask::lab::GUARD_CLIENT_IFACE
    );
    let dump = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned", &pinned])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{dump:?}");
    let dump: Value = serde_json::from_slice(&dump.stdout).unwrap();
    assert_eq!(
        dump.as_array().map(Vec::len),
        Some(2),
        "the operator's blocks: {dump}"
    );

    // The connections from before the kill finish their transfers and close.
    sessions.finish();
    wait_for(
        "the adopted flows closed and gone",
        Duration::from_secs(10),
        || {
            let status: Value =
                serde_json::from_slice(&synguard_cmd(&lab, &["status", "--json"]).stdout).unwrap();
            status["flows"]["total"] == 0
        },
    );
    let (status, stderr) = second.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        !lab.has_xdp(Host::Guard, xtask::lab::GUARD_CLIENT_IFACE)
            .unwrap()
    );
}

#[test]
fn under_systemd_it_is_ready_once_attached_and_says_when_it_reloads_and_stops() {
    use std::os::unix::net::UnixDatagram;
    let lab = new_lab();
    let path = std::env::temp_dir().join(format!("synguard-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut guard = lab
        .exec(
            Host::Guard,
            synguard_bin().to_str().unwrap(),
            [
                "run",
                "--iface",
                xtask::lab::GUARD_CLIENT_IFACE,
                "--server-iface",
                GUARD_SERVER_IFACE,
            ],
        )
        .env("NOTIFY_SOCKET", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 512];
    let mut next = || {
        let len = notify.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..len]).into_owned()
    };
    let ready = next();
    assert!(
        ready.contains("READY=1") && ready.contains("STATUS=guarding to-client"),
        "{ready}"
    );
    assert!(
        lab.has_xdp(Host::Guard, xtask::lab::GUARD_CLIENT_IFACE)
            .unwrap(),
        "ready means attached"
    );
    let pid = guard.id() as i32;
    // SAFETY: signals to the child we started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloading = next();
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(next().contains("READY=1"), "ready again after the reload");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(next().contains("STOPPING=1"));
    assert!(guard.wait().unwrap().success());
    let _ = std::fs::remove_file(&path);
    let out = synguard_cmd(&lab, &["detach"]);
    assert!(out.status.success(), "{out:?}");
}
