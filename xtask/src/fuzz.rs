//! `cargo xtask fuzz [--seconds N] [--target T]`: the libFuzzer targets (cargo-fuzz on the
//! pinned nightly, AddressSanitizer on) over the code both sides share (`common/fuzz`) and
//! over the controller (`userspace/fuzz`), each for N seconds, from the corpus kept in the
//! repository (`<crate>/fuzz/corpus/<target>`, seeded with frames, options and event sequences
//! a real connection produces); what a run finds goes to a working corpus under target/. A
//! crash fails the run and leaves its input under `<crate>/fuzz/artifacts/<target>/`. Results
//! go to results/fuzz.json.

use std::path::Path;

use anyhow::{Context, Result, bail};
use etherparse::{PacketBuilder, TcpOptionElement as O};
use serde_json::{Value, json};

use crate::{bootstrap, build::workspace_root, cmd};

/// Every target, and the crate whose `fuzz/` holds it.
pub const TARGETS: [(&str, &str); 5] = [
    ("parse_frame", "common"),
    ("tcp_options", "common"),
    ("cookie", "common"),
    ("translate", "common"),
    ("flow_table", "userspace"),
];

/// Runs `targets` (all when empty) for `seconds` each.
pub fn run(targets: &[String], seconds: u64) -> Result<()> {
    bootstrap::ensure()?;
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for target in targets {
        if !names.contains(&target.as_str()) {
            bail!(
                "no fuzz target {target}: the targets are {}",
                names.join(", ")
            );
        }
    }
    let selected: Vec<(&str, &str)> = TARGETS
        .into_iter()
        .filter(|(name, _)| targets.is_empty() || targets.iter().any(|t| t == name))
        .collect();
    let mut report = Vec::new();
    for (target, krate) in selected {
        let krate = workspace_root().join(krate);
        let seeds = krate.join("fuzz/corpus").join(target);
        write_seeds(target, &seeds)?;
        let work = workspace_root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&work)?;
        let max_time = format!("-max_total_time={seconds}");
        let mut fuzz = cmd::new(
            "cargo",
            [
                &format!("+{}", bootstrap::nightly()),
                "fuzz",
                "run",
                target,
                work.to_str().context("non-UTF-8 path")?,
                seeds.to_str().context("non-UTF-8 path")?,
                "--",
                &max_time,
            ],
        );
        fuzz.current_dir(&krate);
        let out = fuzz
            .output()
            .with_context(|| format!("running cargo fuzz on {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            bail!(
                "fuzz target {target} failed (its input is under {}/fuzz/artifacts/{target}/):\n{}",
                krate.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let done = summary(&log)
            .with_context(|| format!("cargo fuzz on {target} printed no final line:\n{log}"))?;
        println!(
            "fuzz {target}: {} runs in {} s, coverage {} edges, corpus {} inputs, no crash",
            done["runs"], done["seconds"], done["coverage"], done["corpus"]
        );
        report.push(json!({"target": target, "crashes": 0, "summary": done}));
    }
    let dir = workspace_root().join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("fuzz.json"),
        serde_json::to_string_pretty(&json!({"seconds_per_target": seconds, "targets": report}))?,
    )?;
    println!("written to results/fuzz.json");
    Ok(())
}

/// libFuzzer's last lines: `#N DONE cov: C ft: F corp: K/B ...` and `Done N runs in S second(s)`.
fn summary(log: &str) -> Option<Value> {
    let done = log.lines().rev().find(|line| line.contains("DONE"))?;
    let field = |name: &str| {
        let mut words = done.split_whitespace();
        words.find(|word| *word == name)?;
        words.next().map(str::to_string)
    };
    let runs_line = log.lines().rev().find(|line| line.starts_with("Done "))?;
    let mut words = runs_line.split_whitespace().skip(1);
    let runs: u64 = words.next()?.parse().ok()?;
    let seconds: u64 = words.nth(2)?.parse().ok()?;
    Some(json!({
        "runs": runs,
        "seconds": seconds,
        "coverage": field("cov:")?.parse::<u64>().ok()?,
        "corpus": field("corp:")?.split('/').next()?.parse::<u64>().ok()?,
    }))
}

/// Writes the target's seed inputs into `dir` (the repository's corpus), those missing only.
fn write_seeds(target: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let frames = seed_frames()?;
    let seeds: Vec<Vec<u8>> = match target {
        "parse_frame" => frames,
        // 20 bytes of offsets, then the frame.
        "translate" => frames
            .into_iter()
            .map(|frame| [[0x11u8; 20].as_slice(), &frame].concat())
            .collect(),
        // A length byte (40 bytes of options), then a Linux SYN's options and a SACK ACK's.
        "tcp_options" => vec![
            [
                &[5u8][..],
                &[
                    2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
                ],
            ]
            .concat(),
            [
                &[8u8][..],
                &[
                    1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 3, 1, 1, 5, 10, 0, 0, 0, 4, 0, 0, 0, 5,
                ],
            ]
            .concat(),
        ],
        // Twelve bytes a step (see the target): a flow validated, its data held, joined, a
        // FIN each way, their ACKs, ticks between.
        "flow_table" => vec![
            [
                [0, 0, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 0],
                [7, 0, 0, 1, 1, 0, 0, 0, 10, 0, 0, 0],
                [1, 0, 0x92, 1, 0, 0, 0, 0x90, 1, 0, 0, 0],
                [6, 0, 0, 2, 1, 1, 1, 1, 1, 0, 0, 0],
                [2, 0, 0x11, 1, 11, 0, 0, 0, 1, 0, 0, 0x90],
                [3, 0, 0x90, 1, 1, 0, 0, 0x90, 12, 0, 0, 0],
                [2, 0, 0x91, 1, 1, 0, 0, 0x90, 12, 0, 0, 0],
                [6, 0, 0, 200, 1, 1, 1, 1, 1, 0, 0, 0],
            ]
            .concat(),
        ],
        _ => vec![(0u8..=96).collect()],
    };
    for (i, seed) in seeds.iter().enumerate() {
        let path = dir.join(format!("seed-{i}"));
        if !path.exists() {
            std::fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Frames a real client and server exchange: a Linux SYN over IPv4 and over IPv6, an ACK
/// with timestamps and SACK blocks carrying data, a VLAN-tagged SYN.
fn seed_frames() -> Result<Vec<Vec<u8>>> {
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let (client, server) = ([198, 18, 1, 2], [198, 19, 1, 2]);
    let (client6, server6) = (
        [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2,
        ],
        [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x19, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2,
        ],
    );
    let syn_options = [
        O::MaximumSegmentSize(1460),
        O::SelectiveAcknowledgementPermitted,
        O::Timestamp(1, 0),
        O::Noop,
        O::WindowScale(7),
    ];
    let mut frames = Vec::new();
    let mut write = |builder: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
                     payload: &[u8]|
     -> Result<()> {
        let mut frame = Vec::new();
        builder.write(&mut frame, payload)?;
        frames.push(frame);
        Ok(())
    };
    let eth = || PacketBuilder::ethernet2(mac.0, mac.1);
    let syn = |ip: etherparse::PacketBuilderStep<etherparse::IpHeaders>, port| {
        ip.tcp(port, 80, 1000, 64240).syn().options(&syn_options)
    };
    write(syn(eth().ipv4(client, server, 64), 40000)?, &[])?;
    write(syn(eth().ipv6(client6, server6, 64), 40000)?, &[])?;
    write(
        eth()
            .ipv4(client, server, 64)
            .tcp(40000, 80, 1001, 502)
            .ack(5001)
            .options(&[
                O::Noop,
                O::Noop,
                O::Timestamp(2, 3),
                O::Noop,
                O::Noop,
                O::SelectiveAcknowledgement((6001, 7001), [None, None, None]),
            ])?,
        b"GET / HTTP/1.1\r\n\r\n",
    )?;
    let vlan = etherparse::VlanId::try_new(42)?;
    write(
        syn(eth().single_vlan(vlan).ipv4(client, server, 64), 40001)?,
        &[],
    )?;
    Ok(frames)
}
