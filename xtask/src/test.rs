//! `cargo xtask test`: lint, then the three test tiers of the project.

use std::path::Path;

use anyhow::Result;

use crate::{
    bootstrap,
    build::{self, Profile, workspace_root},
    cmd,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// cargo fmt --check and clippy -D warnings.
    Lint,
    /// Host unit and property tests (no privileges needed).
    Host,
    /// The compiled XDP object through BPF_PROG_TEST_RUN (root).
    Dataplane,
    /// Network namespaces with real kernel TCP through the guard (root).
    Lab,
}

fn cargo_in_root<const N: usize>(args: [&str; N]) -> std::process::Command {
    let mut command = cmd::cargo();
    command.current_dir(workspace_root()).args(args);
    command
}

pub fn run(tiers: &[Tier]) -> Result<()> {
    bootstrap::ensure()?;
    let all = [Tier::Lint, Tier::Host, Tier::Dataplane, Tier::Lab];
    let selected: Vec<Tier> = if tiers.is_empty() {
        all.to_vec()
    } else {
        tiers.to_vec()
    };
    for tier in selected {
        println!("== {tier:?} ==");
        match tier {
            Tier::Lint => {
                cmd::visible(&mut cargo_in_root(["fmt", "--all", "--", "--check"]))?;
                // Default members only: the eBPF crate cannot build for the host.
                cmd::visible(&mut cargo_in_root([
                    "clippy",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))?;
            }
            Tier::Host => {
                cmd::visible(&mut cargo_in_root(["test", "--package", "synguard-common"]))?;
                cmd::visible(&mut cargo_in_root([
                    "test",
                    "--package",
                    "synguard",
                    "--lib",
                    "--bins",
                    "--test",
                    "tcp_state",
                    "--test",
                    "flow_table",
                    "--test",
                    "policy",
                    "--test",
                    "export",
                ]))?;
                cmd::visible(&mut cargo_in_root([
                    "test",
                    "--package",
                    "xtask",
                    "--lib",
                    "--bins",
                ]))?;
            }
            Tier::Dataplane => {
                cmd::visible(&mut cargo_in_root([
                    "test",
                    "--package",
                    "synguard",
                    "--test",
                    "dataplane",
                    "--test",
                    "syn_cookies",
                    "--test",
                    "flows",
                    "--test",
                    "admission",
                ]))?;
            }
            Tier::Lab => {
                let synguard = build::synguard(Profile::Debug)?;
                lab_tests(&synguard)?;
            }
        }
    }
    println!("all selected tiers passed");
    Ok(())
}

fn lab_tests(synguard: &Path) -> Result<()> {
    cmd::visible(
        cargo_in_root([
            "test",
            "--package",
            "xtask",
            "--test",
            "lab",
            "--test",
            "flows",
            "--test",
            "policy",
            "--test",
            "operate",
            "--test",
            "flood",
            "--",
            "--test-threads=1",
        ])
        .env("SYNGUARD_BIN", synguard),
    )
}
