//! `cargo xtask demo`: build, bring a lab up, attach synguard to the guard (both sides), then
//! show its job while its counters print: HTTP to the protected server goes through the
//! cookie handshake and is forwarded; a SYN flood from random sources is answered with cookies
//! while real clients keep getting their pages; a flood from one source is blocked by the
//! policy within a second and dropped at the NIC; the block list and the controller's state
//! histogram at the end. Detach and remove the lab at the end, also on error or ^C.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{
    bootstrap,
    build::{self, Profile},
    cmd,
    lab::{self, GUARD_CLIENT_IFACE, Host, Lab, LabGuard, SERVER_ADDR, SERVER_PORT},
};

const REQUESTS: usize = 20;
/// The protected service: the lab's HTTP server.
const PROTECTED_PORT: u16 = SERVER_PORT;
const FLOOD_SECONDS: u32 = 3;
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
    let mut guard = lab.start_guard(
        &synguard,
        &["--mode", "auto", "--protect", &protect],
        std::process::Stdio::inherit(),
    )?;
    let result = drive(&lab, &synguard);
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

/// Five page fetches, 400 ms apart, while a flood runs; how many arrived.
fn fetch_during(lab: &Lab, mut flood: std::process::Child) -> Result<usize> {
    let mut completed = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        completed += usize::from(lab.page_arrives()?);
    }
    flood.wait()?;
    println!("demo: client: {completed}/5 pages fetched through the guard during the flood");
    if completed == 0 {
        bail!("no client got its page during the flood");
    }
    // One more counter line after the flood.
    std::thread::sleep(Duration::from_millis(1100));
    Ok(completed)
}

fn drive(lab: &Lab, synguard: &Path) -> Result<()> {
    println!(
        "demo: 1/4: HTTP to the protected server: cookie handshake at the guard, then joined and forwarded"
    );
    for request in 1..=REQUESTS {
        if !lab.page_arrives()? {
            bail!("request {request} through the guard failed");
        }
        // Paced so the per-second counter lines show the traffic as it flows.
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("demo: client: {REQUESTS}/{REQUESTS} HTTP requests answered");
    let port = PROTECTED_PORT.to_string();
    println!(
        "demo: 2/4: a {FLOOD_SECONDS} s SYN flood from random sources (hping3 --rand-source) against port {PROTECTED_PORT}: every SYN gets a cookie, no state is kept; real clients fetch pages meanwhile"
    );
    fetch_during(
        lab,
        lab.flood(FLOOD_SECONDS, &["-S", "--rand-source", "-p", &port])?,
    )?;
    println!(
        "demo: 3/4: a {FLOOD_SECONDS} s SYN flood from one source ({FLOOD_SOURCE}): its SYNs over the per-source rate drop at once (drop_syn_rate), then the policy blocks it and every frame of it drops at the NIC (drop_blocked)"
    );
    fetch_during(
        lab,
        lab.flood(FLOOD_SECONDS, &["-S", "-a", FLOOD_SOURCE, "-p", &port])?,
    )?;
    let synguard = synguard.to_str().context("non-UTF-8 path")?;
    let blocks = cmd::stdout(&mut lab.exec(Host::Guard, synguard, ["block", "list"]))?;
    println!("demo: `synguard block list`:\n{blocks}");
    if !blocks.contains(FLOOD_SOURCE) {
        bail!("the single-source flood was not blocked");
    }
    println!("demo: 4/4: the validated flows, as `synguard status` shows them");
    let status = cmd::stdout(&mut lab.exec(Host::Guard, synguard, ["status"]))?;
    println!("{status}");
    Ok(())
}
