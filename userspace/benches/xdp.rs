//! `cargo xtask bench xdp`: the XDP paths timed through BPF_PROG_TEST_RUN, in one run.
//!
//! Every path runs once per call (a SYN is rewritten into a SYN-ACK, so a repeated run would
//! time another path), many calls per sample, the median of the samples reported:
//! - pass:   a do-nothing program: what BPF_PROG_TEST_RUN itself costs per run;
//! - floor:  swaps MACs, addresses and ports and returns XDP_TX: the least a reply can cost;
//! - through: a SYN to an unprotected port: parse, classify, protected-service lookup, pass;
//! - syn:    a SYN to a protected service answered with a cookie SYN-ACK (XDP_TX);
//! - syn-new: the same from a source never seen before (a random-source flood): it counts in
//!   the sketch, and stays out of the per-source counters;
//! - ack:    a third ACK whose cookie validates (ring-buffer event and flow entry);
//! - forged: an ACK with a forged cookie, dropped (both keys tried).
//!
//! Ratios are to the floor, raw and with the harness cost (pass) taken off both sides.

use std::io::Write;

use anyhow::Result;
use synguard::{
    guard_config::ProtectedService,
    object, privilege,
    prog_test_run::{DataPlane, cookie_counter_now},
};
use synguard_common::{
    cookie::{self, CookieKeys, CookieOptions},
    maps::PolicySettings,
    siphash::SipKey,
    test_frames::{CLIENT_ISN, ack_v4, flow_of, syn_v4},
};

const SAMPLES: usize = 15;
const CALLS_PER_SAMPLE: usize = 1000;
const KEYS: CookieKeys = CookieKeys::new(SipKey { k0: 1, k1: 2 }, SipKey { k0: 3, k1: 4 }, 0);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Median over samples of the mean ns per run; `frame_for(i)` gives the i-th call's frame.
fn measure(plane: &mut DataPlane, frame_for: impl Fn(usize) -> Vec<u8>) -> Result<f64> {
    let frames: Vec<Vec<u8>> = (0..SAMPLES * CALLS_PER_SAMPLE).map(frame_for).collect();
    let mut samples = Vec::new();
    for sample in frames.chunks(CALLS_PER_SAMPLE) {
        let mut total = 0u64;
        for frame in sample {
            total += plane.time_once(frame)?;
        }
        samples.push(total as f64 / CALLS_PER_SAMPLE as f64);
        // Keep the event ring from filling: a full ring would time the cheaper lost-event path.
        plane.events()?;
    }
    Ok(median(samples))
}

/// A third ACK from client port `port` echoing a valid cookie.
fn valid_ack(port: u16, counter: u32) -> Vec<u8> {
    let mut frame = ack_v4(CLIENT_ISN.wrapping_add(1), 0, None);
    frame[34..36].copy_from_slice(&port.to_be_bytes());
    let flow = flow_of(&frame);
    let (key, phase) = KEYS.current();
    let cookie = cookie::make(
        key,
        phase,
        &flow,
        CLIENT_ISN,
        counter,
        &CookieOptions::default(),
    );
    frame[42..46].copy_from_slice(&cookie.wrapping_add(1).to_be_bytes());
    frame
}

/// `frame` from the i-th source of 198.18.0.0/15 (the parser does not check the IPv4
/// checksum; the SYN-ACK is written from scratch).
fn from_source(frame: &[u8], i: usize) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let host = 0x0001_0000 + i as u32; // 198.18.1.0 onwards
    frame[26..30].copy_from_slice(&(0xc612_0000 | host).to_be_bytes());
    frame
}

fn main() -> Result<()> {
    privilege::require_xdp_privileges("the XDP benchmark")?;
    let protected: ProtectedService = "198.19.1.0/24:80".parse()?;
    let mut pass = DataPlane::load(object::PEER_PASS_PROGRAM)?;
    let mut floor = DataPlane::load(object::BENCH_FLOOR_PROGRAM)?;
    let mut guard = DataPlane::load(object::GUARD_PROGRAM)?;
    guard.configure(&KEYS, std::slice::from_ref(&protected))?;
    // As `synguard run` sets it by default, but with a SYN rate no row reaches: the rows time
    // the cookie paths, not the drop of an over-rate SYN.
    guard.set_policy_settings(&PolicySettings {
        syn_rate: 1 << 30,
        syn_burst: 1 << 30,
        track_after: 32,
        ..PolicySettings::default()
    })?;

    let syn = syn_v4(0);
    let mut unprotected = syn.clone();
    unprotected[36..38].copy_from_slice(&81u16.to_be_bytes());
    let forged = ack_v4(
        CLIENT_ISN.wrapping_add(1),
        (cookie_counter_now() & 3) << 30 | 0x1234_5677,
        None,
    );
    let counter = cookie_counter_now();
    let rows = [
        ("pass", measure(&mut pass, |_| syn.clone())?),
        ("floor", measure(&mut floor, |_| syn.clone())?),
        ("through", measure(&mut guard, |_| unprotected.clone())?),
        ("syn", measure(&mut guard, |_| syn.clone())?),
        ("syn-new", measure(&mut guard, |i| from_source(&syn, i))?),
        (
            "ack",
            measure(&mut guard, |i| valid_ack(1024 + i as u16, counter))?,
        ),
        ("forged", measure(&mut guard, |_| forged.clone())?),
    ];
    let harness = rows[0].1;
    let floor_ns = rows[1].1;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "XDP paths, BPF_PROG_TEST_RUN, median of {SAMPLES} samples x {CALLS_PER_SAMPLE} runs"
    )?;
    writeln!(
        out,
        "{:<8} {:>10} {:>12} {:>22}",
        "path", "ns/packet", "vs floor", "vs floor, net of pass"
    )?;
    let mut json = Vec::new();
    for (name, ns) in rows {
        let raw = ns / floor_ns;
        let net = (ns - harness) / (floor_ns - harness).max(1.0);
        writeln!(out, "{name:<8} {ns:>10.1} {raw:>11.2}x {net:>21.2}x")?;
        json.push(serde_json::json!({"path": name, "ns_per_packet": ns, "ratio_to_floor": raw, "net_ratio_to_floor": net}));
    }
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
    std::fs::create_dir_all(&results)?;
    let path = results.join("bench-xdp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    writeln!(out, "written to {}", path.display())?;
    Ok(())
}
