//! `cargo xtask bootstrap`: everything a fresh machine needs, installed idempotently, one line
//! per step. The other commands run it first; steps that are already satisfied cost a check.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The nightly that builds the eBPF crate (`-Z build-std`), shared with userspace/build.rs.
pub const NIGHTLY: &str = include_str!("../../xdp-ebpf/nightly-toolchain");
/// bpf-linker links against the LLVM inside that nightly; the feature names its major version.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// cargo-deb builds the Debian package (`cargo xtask package`).
const CARGO_DEB_VERSION: &str = "3.6.3";
/// cargo-fuzz runs the libFuzzer targets (`cargo xtask fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Debian packages the lab and the tests use.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "hping3",
    "tcpdump",
    "bpftool",
    "curl",
    "procps",
    "iperf3",
    "nftables",
    "linux-perf",
];

pub fn nightly() -> &'static str {
    NIGHTLY.trim()
}

/// Runs every step; stops at the first failure with a message naming it.
pub fn ensure() -> Result<()> {
    require_root()?;
    step("debian packages", debian_packages)?;
    step("rustup self-update off", || {
        cmd::output(&mut cmd::new(
            "rustup",
            ["set", "auto-self-update", "disable"],
        ))?;
        Ok("disabled".into())
    })?;
    step("pinned nightly + rust-src", nightly_toolchain)?;
    step("bpf-linker", bpf_linker)?;
    step("cargo-deb", || cargo_tool("cargo-deb", CARGO_DEB_VERSION))?;
    step("cargo-fuzz", || {
        cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION)
    })?;
    Ok(())
}

fn step(name: &str, run: impl FnOnce() -> Result<String>) -> Result<()> {
    match run() {
        Ok(what) => {
            println!("bootstrap: {name}: {what}");
            Ok(())
        }
        Err(error) => bail!(
            "bootstrap: {name} failed: {error:#}\n(fix the cause above, then run `cargo xtask bootstrap` again)"
        ),
    }
}

/// Loading XDP programs, creating namespaces and installing packages all need root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF): it installs packages, \
             loads XDP programs and creates network namespaces; run it as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .map(|out| out.status.success() && out.stdout == b"installed")
        .unwrap_or(false)
}

fn debian_packages() -> Result<String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|name| !package_installed(name))
        .collect();
    if missing.is_empty() {
        return Ok("already installed".into());
    }
    cmd::output(&mut cmd::new("apt-get", ["update", "-qq"]))?;
    cmd::output(
        cmd::new(
            "apt-get",
            ["install", "-y", "-qq", "--no-install-recommends"],
        )
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(format!("installed {}", missing.join(" ")))
}

/// A cargo subcommand from crates.io at `version`, installed unless that version is there.
fn cargo_tool(name: &str, version: &str) -> Result<String> {
    let installed = cmd::stdout(&mut cmd::new(name, ["--version"])).unwrap_or_default();
    if installed.contains(version) {
        return Ok(format!("{version} already installed"));
    }
    cmd::output(cmd::cargo().args(["install", name, "--version", version, "--locked", "--force"]))?;
    Ok(format!("installed {version}"))
}

fn nightly_toolchain() -> Result<String> {
    let nightly = nightly();
    let installed = cmd::stdout(&mut cmd::new(
        "rustup",
        ["component", "list", "--installed", "--toolchain", nightly],
    ))
    .unwrap_or_default();
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(format!("{nightly} already installed"));
    }
    cmd::output(&mut cmd::new(
        "rustup",
        [
            "toolchain",
            "install",
            nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ],
    ))?;
    Ok(format!("installed {nightly} with rust-src"))
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// bpf-linker's binary keeps a RUNPATH to this directory, so it must stay.
fn llvm_prefix() -> Result<PathBuf> {
    Ok(home()?
        .join(".local/share/synguard")
        .join(BPF_LINKER_LLVM_FEATURE))
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}

fn bpf_linker() -> Result<String> {
    if bpf_linker_works() {
        return Ok(format!("{BPF_LINKER_VERSION} already installed"));
    }
    let sysroot = cmd::stdout(&mut cmd::new(
        "rustc",
        [format!("+{}", nightly()).as_str(), "--print", "sysroot"],
    ))?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm_lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let prefix = llvm_prefix()?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    // The build links `-lLLVM`; the built binary looks the soname up through its RUNPATH.
    let soname = llvm_lib
        .file_name()
        .context("LLVM library without a name")?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(soname)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm_lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    cmd::output(
        cmd::cargo()
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_works() {
        bail!("bpf-linker was built but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(format!(
        "built {BPF_LINKER_VERSION} against {}",
        llvm_lib.display()
    ))
}
