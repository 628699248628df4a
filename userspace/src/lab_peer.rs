//! `synguard lab-peer-pass` (hidden): used by the lab, not by operators.
//!
//! Native XDP on veth delivers XDP_TX/XDP_REDIRECT frames only when the peer veth runs an XDP
//! program too. This attaches the object's do-nothing program to such a peer, inside a network
//! namespace, and pins the link in bpffs so it outlives this process; removing the pin (the
//! lab's `down`) detaches it.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use anyhow::{Context, Result, bail};
use aya::programs::{XdpMode, links::FdLink};
use clap::Args;
use synguard::{object, privilege};

#[derive(Args)]
pub struct LabPeerArgs {
    /// Network namespace (as in `ip netns list`) holding the interface.
    #[arg(long)]
    netns: String,
    /// The peer interface inside that namespace.
    #[arg(long)]
    iface: String,
    /// Where to pin the link in bpffs.
    #[arg(long)]
    pin: PathBuf,
    /// Drop about one in N data frames arriving there (loss for the lab's SACK tests).
    #[arg(long, value_name = "N", default_value_t = 0)]
    drop_one_in: u32,
    /// Drop IPv4 frames to any address but this one: answers to a flood's spoofed sources,
    /// which a real network would not deliver to this host.
    #[arg(long, value_name = "IPV4")]
    only_for: Option<std::net::Ipv4Addr>,
}

pub fn lab_peer_pass(args: LabPeerArgs) -> Result<()> {
    privilege::require_xdp_privileges("synguard lab-peer-pass")?;
    enter_netns(&args.netns)?;
    let mut ebpf = aya::EbpfLoader::new()
        .override_global(aya_log::LEVEL, &0u8, true)
        .override_global(object::LAB_DROP_ONE_IN, &args.drop_one_in, true)
        .override_global(
            object::LAB_ONLY_FOR_IPV4,
            &args
                .only_for
                .map_or(0, |address| u32::from_ne_bytes(address.octets())),
            true,
        )
        .load(object::EBPF_OBJECT)
        .context("loading the eBPF object")?;
    let program = object::load_xdp(&mut ebpf, object::PEER_PASS_PROGRAM)?;
    let link_id = program
        .attach(&args.iface, XdpMode::Driver)
        .with_context(|| format!("attaching the pass program to {}", args.iface))?;
    let link: FdLink = program
        .take_link(link_id)?
        .try_into()
        .context("the kernel attached through netlink, so the link cannot be pinned")?;
    link.pin(&args.pin)
        .with_context(|| format!("pinning the link at {}", args.pin.display()))?;
    Ok(())
}

/// Moves this (still single-threaded) process into a named network namespace. The mount
/// namespace stays, so bpffs pins land where the lab can remove them.
fn enter_netns(name: &str) -> Result<()> {
    let path = PathBuf::from("/run/netns").join(name);
    let ns = File::open(&path)
        .with_context(|| format!("network namespace {name:?} not found ({})", path.display()))?;
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "entering network namespace {name:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
