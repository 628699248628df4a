//! Checks the privileges XDP needs before touching anything, so the error says what to do.

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process, from /proc/self/status.
fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Loading and attaching XDP needs CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN on older kernels).
pub fn require_xdp_privileges(what: &str) -> Result<()> {
    let caps = effective_capabilities();
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        return Ok(());
    }
    bail!(
        "{what} needs CAP_NET_ADMIN and CAP_BPF to load and attach XDP programs: run it as root (sudo)"
    )
}
