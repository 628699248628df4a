//! `cargo xtask test`: lint, then the three test tiers of the project.
//!
//! A tier finds its test files by name: every `tests/*.rs` of a package starts with the tier it
//! belongs to (`host_`, `dataplane_` or `lab_`), so a new file runs with no list to edit, and a
//! file that names no tier stops the run instead of never running.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{
    bootstrap,
    build::{self, Profile, workspace_root},
    cmd, fuzz, package,
};

/// Seconds each fuzz target runs in the test tier (`cargo xtask fuzz` runs them longer).
const FUZZ_SECONDS: u64 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// cargo fmt --check and clippy -D warnings.
    Lint,
    /// Host unit and property tests (no privileges needed).
    Host,
    /// Every libFuzzer target of `cargo xtask fuzz`, briefly.
    Fuzz,
    /// The compiled XDP object through BPF_PROG_TEST_RUN (root).
    Dataplane,
    /// Network namespaces with real kernel TCP through the guard (root).
    Lab,
}

impl Tier {
    /// The prefix of this tier's test files; lint has none.
    fn file_prefix(self) -> Option<&'static str> {
        match self {
            Tier::Lint | Tier::Fuzz => None,
            Tier::Host => Some("host_"),
            Tier::Dataplane => Some("dataplane_"),
            Tier::Lab => Some("lab_"),
        }
    }
}

/// The packages with test files, by their folder and cargo name.
const PACKAGES: [(&str, &str); 3] = [
    ("common", "synguard-common"),
    ("userspace", "synguard"),
    ("xtask", "xtask"),
];

/// The test targets of `tier` in the package in `dir`: the stems of `tests/<prefix>*.rs`.
/// Fails on a test file whose name belongs to no tier.
pub fn test_targets(dir: &Path, tier: Tier) -> Result<Vec<String>> {
    let tests = dir.join("tests");
    let Ok(entries) = std::fs::read_dir(&tests) else {
        return Ok(Vec::new());
    };
    let prefixes: Vec<&str> = [Tier::Host, Tier::Dataplane, Tier::Lab]
        .into_iter()
        .filter_map(Tier::file_prefix)
        .collect();
    let mut targets = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", tests.display()))?
            .path();
        let Some(stem) = path
            .extension()
            .is_some_and(|ext| ext == "rs")
            .then(|| path.file_stem().and_then(|s| s.to_str()))
            .flatten()
        else {
            continue;
        };
        if !prefixes.iter().any(|prefix| stem.starts_with(prefix)) {
            bail!(
                "test file {} belongs to no tier: rename it host_*.rs, dataplane_*.rs or lab_*.rs",
                path.display()
            );
        }
        if tier
            .file_prefix()
            .is_some_and(|prefix| stem.starts_with(prefix))
        {
            targets.push(stem.to_string());
        }
    }
    targets.sort();
    Ok(targets)
}

/// `cargo test` of `package`: the given test targets, and for the host tier the library's and
/// binaries' unit tests; `env` is set for the tests.
fn cargo_test(
    package: &str,
    targets: &[String],
    unit_tests: bool,
    env: &[(&str, &Path)],
    extra: &[&str],
) -> Result<()> {
    let mut command = cmd::cargo();
    command
        .current_dir(workspace_root())
        .args(["test", "--package", package]);
    if unit_tests {
        command.args(["--lib", "--bins"]);
    }
    for target in targets {
        command.args(["--test", target]);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    if !extra.is_empty() {
        command.arg("--").args(extra);
    }
    cmd::visible(&mut command)
}

pub fn run(tiers: &[Tier]) -> Result<()> {
    bootstrap::ensure()?;
    let all = [
        Tier::Lint,
        Tier::Host,
        Tier::Fuzz,
        Tier::Dataplane,
        Tier::Lab,
    ];
    let selected: Vec<Tier> = if tiers.is_empty() {
        all.to_vec()
    } else {
        tiers.to_vec()
    };
    for tier in selected {
        println!("== {tier:?} ==");
        if tier == Tier::Fuzz {
            fuzz::run(&[], FUZZ_SECONDS)?;
            continue;
        }
        if tier == Tier::Lint {
            let mut fmt = cmd::cargo();
            fmt.current_dir(workspace_root())
                .args(["fmt", "--all", "--", "--check"]);
            cmd::visible(&mut fmt)?;
            // The fuzz targets are their own workspaces (built by the nightly only).
            for manifest in ["common/fuzz/Cargo.toml", "userspace/fuzz/Cargo.toml"] {
                let mut fmt_fuzz = cmd::cargo();
                fmt_fuzz.current_dir(workspace_root()).args([
                    "fmt",
                    "--manifest-path",
                    manifest,
                    "--",
                    "--check",
                ]);
                cmd::visible(&mut fmt_fuzz)?;
            }
            // Default members only (the eBPF crate cannot build for the host); every feature,
            // so the lab binary is linted too.
            let mut clippy = cmd::cargo();
            clippy.current_dir(workspace_root()).args([
                "clippy",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]);
            cmd::visible(&mut clippy)?;
            continue;
        }
        // The lab drives the synguard binary and installs its package, one lab at a time.
        let lab_inputs = match tier {
            Tier::Lab => Some((
                build::synguard(Profile::Debug)?,
                build::synguard_variant("upgrade-b")?,
                package::build(Profile::Debug)?,
            )),
            _ => None,
        };
        let extra: &[&str] = if tier == Tier::Lab {
            &["--test-threads=1"]
        } else {
            &[]
        };
        for (dir, package) in PACKAGES {
            let targets = test_targets(&workspace_root().join(dir), tier)?;
            let unit_tests = tier == Tier::Host;
            if targets.is_empty() && !unit_tests {
                continue;
            }
            let env: Vec<(&str, &Path)> = match &lab_inputs {
                Some((synguard, newer, deb)) => vec![
                    ("SYNGUARD_BIN", synguard),
                    ("SYNGUARD_BIN_B", newer),
                    ("SYNGUARD_DEB", deb),
                ],
                None => Vec::new(),
            };
            cargo_test(package, &targets, unit_tests, &env, extra)?;
        }
    }
    println!("all selected tiers passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_find_their_files_by_name_and_refuse_strays() {
        let dir = std::env::temp_dir().join(format!("synguard-tiers-{}", std::process::id()));
        let tests = dir.join("tests");
        std::fs::create_dir_all(tests.join("support")).unwrap();
        for name in [
            "host_b.rs",
            "host_a.rs",
            "dataplane_x.rs",
            "lab_y.rs",
            "notes.txt",
        ] {
            std::fs::write(tests.join(name), "").unwrap();
        }
        assert_eq!(
            test_targets(&dir, Tier::Host).unwrap(),
            ["host_a", "host_b"]
        );
        assert_eq!(
            test_targets(&dir, Tier::Dataplane).unwrap(),
            ["dataplane_x"]
        );
        assert_eq!(test_targets(&dir, Tier::Lab).unwrap(), ["lab_y"]);
        std::fs::write(tests.join("forgotten.rs"), "").unwrap();
        let error = test_targets(&dir, Tier::Host).unwrap_err().to_string();
        assert!(error.contains("forgotten.rs belongs to no tier"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
