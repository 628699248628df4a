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

/// Builds the `synguard` binary and returns its path.
pub fn synguard(profile: Profile) -> Result<PathBuf> {
    let mut command = cmd::cargo();
    command.current_dir(workspace_root()).args([
        "build",
        "--package",
        "synguard",
        "--bin",
        "synguard",
    ]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    cmd::visible(&mut command)?;
    let dir = match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    };
    Ok(target_dir().join(dir).join("synguard"))
}
