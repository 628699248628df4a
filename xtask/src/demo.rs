//! `cargo xtask demo`: build, bring a lab up, attach synguard to the guard, then show both of
//! its jobs while its counters print: traffic to an unprotected port passes untouched, and a
//! SYN flood against a protected port is answered with cookies while real clients still
//! complete their handshakes. Detach and remove the lab at the end, also on error or ^C.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bootstrap,
    build::{self, Profile},
    cmd,
    lab::{self, GUARD_CLIENT_IFACE, Host, Lab, LabGuard, SERVER_ADDR, SERVER_PORT},
    lab_server,
};

const REQUESTS: usize = 20;
/// The protected service: nothing listens there, the guard alone answers handshakes.
const PROTECTED_PORT: u16 = 443;
const FLOOD_SECONDS: &str = "3";
/// Spoofed flood source, inside the lab's range: its SYN-ACKs die in the client namespace.
const FLOOD_SOURCE: &str = "198.18.1.99";

pub fn run(xtask: &Path) -> Result<()> {
    bootstrap::ensure()?;
    let synguard = build::synguard(Profile::Release)?;
    // ^C must reach synguard (which then detaches) but not cut the clean-up short here.
    // SAFETY: setting a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let lab = LabGuard(Lab::up(
        &lab::unique_suffix(),
        &synguard,
        &lab::server_command(xtask),
    )?);
    println!(
        "demo: lab {} up: client {} -> guard ({}) -> server {SERVER_ADDR}",
        lab.name,
        lab::CLIENT_ADDR,
        GUARD_CLIENT_IFACE
    );
    let protect = format!("{SERVER_ADDR}/32:{PROTECTED_PORT}");
    let mut guard = lab
        .exec(
            Host::Guard,
            synguard.to_str().context("non-UTF-8 path")?,
            [
                "run",
                "--iface",
                GUARD_CLIENT_IFACE,
                "--mode",
                "auto",
                "--protect",
                &protect,
            ],
        )
        .spawn()
        .context("starting synguard")?;
    let result = drive(&lab);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(guard.id() as i32, libc::SIGINT) };
    let status = guard.wait()?;
    result?;
    if !status.success() {
        bail!("synguard exited with {status}");
    }
    println!("demo: done; removing the lab");
    Ok(())
}

fn drive(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE)? {
        if Instant::now() > deadline {
            bail!("synguard did not attach within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("demo: 1/2: HTTP to the unprotected port {SERVER_PORT} passes through the guard");
    let url = format!("http://{SERVER_ADDR}:{SERVER_PORT}/");
    for request in 1..=REQUESTS {
        let body =
            cmd::stdout(&mut lab.exec(Host::Client, "curl", ["-sS", "--max-time", "5", &url]))?;
        if body != lab_server::BODY {
            bail!("request {request}: unexpected answer {body:?}");
        }
        // Paced so the per-second counter lines show the traffic as it flows.
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("demo: client: {REQUESTS}/{REQUESTS} HTTP requests answered");
    println!(
        "demo: 2/2: a {FLOOD_SECONDS} s SYN flood (hping3, source {FLOOD_SOURCE}) against the protected port {PROTECTED_PORT}; real clients connect meanwhile"
    );
    let mut flood = lab
        .exec(
            Host::Client,
            "timeout",
            [
                FLOOD_SECONDS,
                "hping3",
                "-q",
                "-S",
                "--flood",
                "-a",
                FLOOD_SOURCE,
                "-p",
                &PROTECTED_PORT.to_string(),
                SERVER_ADDR,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hping3")?;
    let connect = format!("exec 3<>/dev/tcp/{SERVER_ADDR}/{PROTECTED_PORT}");
    let mut completed = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        let ok = lab
            .exec(Host::Client, "timeout", ["2", "bash", "-c", &connect])
            .status()?
            .success();
        completed += usize::from(ok);
    }
    flood.wait()?;
    println!(
        "demo: client: {completed}/5 handshakes completed against the guard's cookies during the flood"
    );
    if completed == 0 {
        bail!("no client completed its handshake during the flood");
    }
    // One more counter line after the flood.
    std::thread::sleep(Duration::from_millis(1100));
    Ok(())
}
