//! `cargo xtask bench [xdp] [forward]`: benchmarks, each a comparison measured within one run.

use std::path::Path;

use anyhow::Result;

use crate::{bench_forward, bootstrap, build::workspace_root, cmd};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// XDP paths through BPF_PROG_TEST_RUN against a floor program (results/bench-xdp.json).
    Xdp,
    /// Throughput and connections/s through synguard against plain routing, in the lab; the
    /// controller's event path (results/bench-forward.json).
    Forward,
}

pub fn run(benches: &[Bench], xtask: &Path) -> Result<()> {
    bootstrap::ensure()?;
    let selected = if benches.is_empty() {
        &[Bench::Xdp, Bench::Forward][..]
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
            Bench::Forward => bench_forward::run(xtask)?,
        }
    }
    Ok(())
}
