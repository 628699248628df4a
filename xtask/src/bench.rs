//! `cargo xtask bench [xdp] [forward] [flood]`: benchmarks, each a comparison measured within
//! one run; results/bench-summary.md gathers what the selected ones wrote.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    bench_forward, bootstrap,
    build::workspace_root,
    cmd,
    flood::{
        self,
        plan::{Defense, Generator, Options, Scenario},
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// XDP paths through BPF_PROG_TEST_RUN against a floor program (results/bench-xdp.json).
    Xdp,
    /// Throughput and connections/s through synguard against plain routing, in the lab; the
    /// controller's event path (results/bench-forward.json).
    Forward,
    /// The flood lab's random-source SYN flood, every defense, both generators
    /// (results/flood/random-syn.*).
    Flood,
}

pub fn run(benches: &[Bench], xtask: &Path) -> Result<()> {
    bootstrap::ensure()?;
    let selected = if benches.is_empty() {
        &[Bench::Xdp, Bench::Forward, Bench::Flood][..]
    } else {
        benches
    };
    let mut summary = String::from("# synguard benchmarks\n\n");
    for bench in selected {
        match bench {
            Bench::Xdp => {
                cmd::visible(cmd::cargo().current_dir(workspace_root()).args([
                    "bench",
                    "--package",
                    "synguard",
                    "--bench",
                    "xdp",
                ]))?;
                summary.push_str(&xdp_section()?);
            }
            Bench::Forward => {
                bench_forward::run(xtask)?;
                summary.push_str(&forward_section()?);
            }
            Bench::Flood => {
                let options = Options {
                    scenarios: vec![Scenario::RandomSyn],
                    defenses: Defense::ALL.to_vec(),
                    generators: Generator::ALL.to_vec(),
                    seconds: 8,
                    attack_rate: 0,
                    legit_rate: 200,
                    client_timestamps: true,
                    repeats: 3,
                    profile: false,
                    guard_args: Vec::new(),
                };
                flood::run::run(xtask, &options)?;
                summary.push_str("## Flood lab (`cargo xtask flood --scenario random-syn`)\n\n");
                let table =
                    std::fs::read_to_string(workspace_root().join("results/flood/random-syn.md"))?;
                // The table without its title line.
                summary.push_str(table.split_once('\n').map_or(&*table, |(_, rest)| rest));
                summary.push('\n');
            }
        }
    }
    let path = workspace_root().join("results/bench-summary.md");
    std::fs::write(&path, summary)?;
    println!("summary written to {}", path.display());
    Ok(())
}

fn read_json(name: &str) -> Result<Value> {
    let path = workspace_root().join("results").join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn xdp_section() -> Result<String> {
    let mut out = String::from(
        "## XDP paths (`cargo xtask bench xdp`, BPF_PROG_TEST_RUN, median ns/packet)\n\n\
         | path | ns/packet | ratio to the XDP_TX floor | ratio to the kernel's cookie helper |\n|---|---:|---:|---:|\n",
    );
    for row in read_json("bench-xdp.json")?
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "| {} | {:.1} | {:.2} | {:.2} |\n",
            row["path"].as_str().unwrap_or("?"),
            row["ns_per_packet"].as_f64().unwrap_or(f64::NAN),
            row["ratio_to_floor"].as_f64().unwrap_or(f64::NAN),
            row["ratio_to_kernel_cookie"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    out.push('\n');
    Ok(out)
}

fn forward_section() -> Result<String> {
    let report = read_json("bench-forward.json")?;
    let figure = |side: &str, key: &str| report[side][key].as_f64().unwrap_or(f64::NAN);
    Ok(format!(
        "## Forwarding (`cargo xtask bench forward`, medians)\n\n\
         | | plain routing | synguard | ratio |\n|---|---:|---:|---:|\n\
         | throughput Gbit/s | {:.2} | {:.2} | {:.2} |\n\
         | new connections/s | {:.0} | {:.0} | {:.2} |\n\n",
        figure("plain_routing", "throughput_gbps"),
        figure("synguard", "throughput_gbps"),
        report["throughput_ratio"].as_f64().unwrap_or(f64::NAN),
        figure("plain_routing", "connections_per_s"),
        figure("synguard", "connections_per_s"),
        report["connections_ratio"].as_f64().unwrap_or(f64::NAN),
    ))
}
