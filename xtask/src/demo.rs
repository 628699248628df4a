//! `cargo xtask demo`: build, bring a lab up, attach synguard to the guard, send real HTTP
//! requests through it while its counters print, then detach and remove the lab.

use std::{
    path::Path,
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

const REQUESTS: usize = 30;

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
        "demo: lab {} up: client {} -> guard ({}) -> server {SERVER_ADDR}:{SERVER_PORT}",
        lab.name,
        lab::CLIENT_ADDR,
        GUARD_CLIENT_IFACE
    );
    let mut guard = lab
        .exec(
            Host::Guard,
            synguard.to_str().context("non-UTF-8 path")?,
            ["run", "--iface", GUARD_CLIENT_IFACE, "--mode", "auto"],
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
    let url = format!("http://{SERVER_ADDR}:{SERVER_PORT}/");
    for request in 1..=REQUESTS {
        let body =
            cmd::stdout(&mut lab.exec(Host::Client, "curl", ["-sS", "--max-time", "5", &url]))?;
        if body != lab_server::BODY {
            bail!("request {request}: unexpected answer {body:?}");
        }
        if request % 10 == 0 {
            println!("demo: client: {request}/{REQUESTS} HTTP requests answered through the guard");
        }
        // Paced so the per-second counter lines show the traffic as it flows.
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
