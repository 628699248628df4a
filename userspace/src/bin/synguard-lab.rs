//! `synguard-lab`: the lab's plumbing, never shipped (see `cargo xtask lab` and
//! `cargo xtask flood`).
//!
//! `peer-pass`: native XDP on veth delivers XDP_TX/XDP_REDIRECT frames only when the peer veth runs an XDP
//! program too. This attaches the object's do-nothing program to such a peer, inside a network
//! namespace, and pins the link in bpffs so it outlives this process; removing the pin (the
//! lab's `down`) detaches it.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use anyhow::{Context, Result, bail};
use aya::programs::{XdpMode, links::FdLink};
use clap::{Args, Parser, Subcommand};
use synguard::{
    dataplane::{object, privilege},
    lab,
};
use synguard_common::maps::{LAB_FLOOD_FRAME_LEN, LAB_FLOOD_TEMPLATE_MAP};

#[derive(Args)]
struct PeerPassArgs {
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

fn peer_pass(args: PeerPassArgs) -> Result<()> {
    privilege::require_xdp_privileges("synguard-lab peer-pass")?;
    enter_netns(&args.netns)?;
    let only_for = args
        .only_for
        .map_or(0, |address| u32::from_ne_bytes(address.octets()));
    let mut ebpf = lab::load(&[
        (lab::LAB_DROP_ONE_IN, args.drop_one_in),
        (lab::LAB_ONLY_FOR_IPV4, only_for),
    ])?;
    let program = object::load_xdp(&mut ebpf, lab::PEER_PASS_PROGRAM)?;
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

#[derive(Args)]
struct FloodFramesArgs {
    /// The interface the frames go out of (in this process's network namespace).
    #[arg(long)]
    iface: String,
    /// A template frame in hex (repeatable: the templates take turns).
    #[arg(long = "frame", value_name = "HEX", required = true)]
    frames: Vec<String>,
    /// How many low bits of the templates' IPv4 source to randomize.
    #[arg(long, default_value_t = 0)]
    source_bits: u32,
    /// How long to flood, seconds.
    #[arg(long)]
    seconds: u64,
    /// Frames per second to send (0: as fast as they are made). Each frame waits for its slot
    /// in the generator, so they go out spread over time (at most 64 back to back after a
    /// gap).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

/// Frames made by the first BPF_PROG_TEST_RUN call; later calls are sized to last
/// [`FLOOD_CALL_SECONDS`]. A call sets up and tears down its page pool, which waits for an RCU
/// grace period (tens of milliseconds here), and sends nothing meanwhile; a paced flood
/// makes up at most 64 frames of such a gap, so short calls would leave it well under its
/// rate.
const FLOOD_FIRST_CALL_FRAMES: u32 = 1 << 18;
const FLOOD_CALL_SECONDS: f64 = 0.25;
/// Frames per live-frames batch inside a call. A call makes its frames as fast as the CPU
/// can, or, with `--rate`, spins for each frame's slot.
const FLOOD_BATCH: u32 = 64;
/// How long a paced batch lasts: a batch runs with bottom halves off, so the client's and
/// the server's tasks on the generator's CPU wait for its end; paced, a batch spends its time
/// waiting for its frames' slots.
const PACED_BATCH_SECONDS: f64 = 10e-6;

/// `synguard-lab flood-frames`: the lab's fastest flood generator. Runs the object's
/// `lab_flood_frames` program through BPF_PROG_TEST_RUN in live-frames mode: every run
/// randomizes a copy of a template and redirects it out of `--iface` (with `--rate`, at its
/// slot; a frame whose slot is too far ahead drops). Prints the frames made.
fn flood_frames(args: FloodFramesArgs) -> Result<()> {
    use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
    privilege::require_xdp_privileges("synguard-lab flood-frames")?;
    let name = std::ffi::CString::new(args.iface.as_str())?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {} in this namespace", args.iface);
    }
    let templates = args
        .frames
        .iter()
        .map(|text| {
            let bytes = hex::decode(text).with_context(|| format!("--frame {text}"))?;
            <[u8; LAB_FLOOD_FRAME_LEN]>::try_from(bytes).map_err(|bytes| {
                anyhow::anyhow!(
                    "--frame has {} bytes, not {LAB_FLOOD_FRAME_LEN}",
                    bytes.len()
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ebpf = lab::load(&[
        (lab::LAB_FLOOD_IFINDEX, ifindex),
        (lab::LAB_FLOOD_SOURCE_BITS, args.source_bits),
    ])?;
    let mut template_map: aya::maps::Array<_, [u8; LAB_FLOOD_FRAME_LEN]> = ebpf
        .take_map(LAB_FLOOD_TEMPLATE_MAP)
        .context("the flood template map is missing")?
        .try_into()?;
    lab::set_flood_rate(&mut ebpf, args.rate)?;
    let program = object::load_xdp(&mut ebpf, lab::LAB_FLOOD_PROGRAM)?;
    let batch = if args.rate == 0 {
        FLOOD_BATCH
    } else {
        ((args.rate as f64 * PACED_BATCH_SECONDS) as u32).clamp(1, FLOOD_BATCH)
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(args.seconds);
    let (mut made, mut call_frames) = (0u64, FLOOD_FIRST_CALL_FRAMES);
    for template in templates.iter().cycle() {
        let call_start = std::time::Instant::now();
        if call_start >= end {
            break;
        }
        if templates.len() > 1 || made == 0 {
            template_map.set(0, template, 0)?;
        }
        program
            .test_run(TestRunOptions {
                data_in: Some(&template[..]),
                repeat: call_frames,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN in live-frames mode")?;
        made += u64::from(call_frames);
        // At the rate this call made frames: the next lasts FLOOD_CALL_SECONDS, or what is left.
        let per_second = f64::from(call_frames) / call_start.elapsed().as_secs_f64().max(1e-6);
        let seconds = end
            .saturating_duration_since(std::time::Instant::now())
            .as_secs_f64()
            .min(FLOOD_CALL_SECONDS);
        call_frames = (per_second * seconds).clamp(f64::from(batch), f64::from(1u32 << 24)) as u32;
    }
    println!("made {made} frames");
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "synguard-lab",
    about = "The lab's plumbing (see `cargo xtask lab`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pin a pass program on a peer veth.
    PeerPass(PeerPassArgs),
    /// The live-frames flood generator.
    FloodFrames(FloodFramesArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::PeerPass(args) => peer_pass(args),
        Command::FloodFrames(args) => flood_frames(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("synguard-lab: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
