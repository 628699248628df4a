//! `cargo xtask bench [xdp]`: benchmarks, each a comparison measured within one run.

use anyhow::Result;

use crate::{bootstrap, build::workspace_root, cmd};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// XDP paths through BPF_PROG_TEST_RUN against a floor program (results/bench-xdp.json).
    Xdp,
}

pub fn run(benches: &[Bench]) -> Result<()> {
    bootstrap::ensure()?;
    let selected = if benches.is_empty() {
        &[Bench::Xdp][..]
    } else {
        benches
    };
    for bench in selected {
        match bench {
            Bench::Xdp => cmd::visible(cmd::cargo().current_dir(workspace_root()).args([
                "bench",
                "--package",
                "synguard",
                "--bench",
                "xdp",
            ]))?,
        }
    }
    Ok(())
}
