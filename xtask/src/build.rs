//! Building synguard (the eBPF object comes along through userspace/build.rs).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

/// Builds the `synguard` binary, and beside it the lab's `synguard-lab` (with the `lab`
/// feature, so the product binary carries no lab code); returns the path of `synguard`.
pub fn synguard(profile: Profile) -> Result<PathBuf> {
    for (bin, features) in [("synguard", None), ("synguard-lab", Some("lab"))] {
        let mut command = cmd::cargo();
        command.current_dir(workspace_root()).args([
            "build",
            "--package",
            "synguard",
            "--bin",
            bin,
        ]);
        if let Some(features) = features {
            command.args(["--features", features]);
        }
        if profile == Profile::Release {
            command.arg("--release");
        }
        cmd::visible(&mut command)?;
    }
    let dir = match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    };
    Ok(target_dir().join(dir).join("synguard"))
}

/// A second `synguard` (debug) whose eBPF object differs from [`synguard`]'s only by its
/// build mark (`SYNGUARD_BUILD_SALT`), built in a target directory of its own so that neither
/// overwrites the other: the upgrade test's newer build.
pub fn synguard_variant(salt: &str) -> Result<PathBuf> {
    let dir = target_dir().join(format!("variant-{salt}"));
    let mut command = cmd::cargo();
    command
        .current_dir(workspace_root())
        .args(["build", "--package", "synguard", "--bin", "synguard"])
        .env("CARGO_TARGET_DIR", &dir)
        .env("SYNGUARD_BUILD_SALT", salt);
    cmd::visible(&mut command)?;
    Ok(dir.join("debug").join("synguard"))
}

/// The lab's plumbing binary built beside `synguard` by [`synguard`].
pub fn lab_tool(synguard: &Path) -> PathBuf {
    synguard.with_file_name("synguard-lab")
}
