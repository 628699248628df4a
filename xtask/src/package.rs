//! `cargo xtask package`: the Debian package, built with cargo-deb from the metadata in
//! `userspace/Cargo.toml`. The man page and the shell completions are generated first, by the
//! very binary that is packaged, into target/package/.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::{
    bootstrap,
    build::{Profile, target_dir, workspace_root},
    cmd,
};

/// Builds the package; returns the path of the .deb.
pub fn build(profile: Profile) -> Result<PathBuf> {
    bootstrap::ensure()?;
    let (cargo_profile, dir) = match profile {
        Profile::Debug => ("dev", "debug"),
        Profile::Release => ("release", "release"),
    };
    let mut build = cmd::cargo();
    build.current_dir(workspace_root()).args([
        "build",
        "--package",
        "synguard",
        "--bin",
        "synguard",
        "--profile",
        cargo_profile,
    ]);
    cmd::visible(&mut build)?;
    let synguard = target_dir().join(dir).join("synguard");
    let out = target_dir().join("package");
    std::fs::create_dir_all(&out)?;
    let page = cmd::stdout(&mut cmd::new(path_str(&synguard)?, ["man"]))?;
    std::fs::write(out.join("synguard.8"), page)?;
    let _ = std::fs::remove_file(out.join("synguard.8.gz"));
    cmd::output(cmd::new("gzip", ["-9n", "synguard.8"]).current_dir(&out))?;
    for (shell, file) in [
        ("bash", "synguard.bash"),
        ("zsh", "_synguard"),
        ("fish", "synguard.fish"),
    ] {
        let script = cmd::stdout(&mut cmd::new(path_str(&synguard)?, ["completions", shell]))?;
        std::fs::write(out.join(file), script)?;
    }
    let mut deb = cmd::cargo();
    deb.current_dir(workspace_root()).args([
        "deb",
        "--package",
        "synguard",
        "--no-build",
        "--profile",
        cargo_profile,
        "--output",
    ]);
    deb.arg(&out);
    if profile == Profile::Debug {
        deb.arg("--fast");
    }
    let printed = cmd::stdout(&mut deb)?;
    let path = PathBuf::from(
        printed
            .lines()
            .last()
            .context("cargo deb printed no package path")?
            .trim(),
    );
    if !path.is_file() {
        bail!(
            "cargo deb said it wrote {}, which is not there",
            path.display()
        );
    }
    Ok(path)
}

fn path_str(path: &std::path::Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 path")
}
