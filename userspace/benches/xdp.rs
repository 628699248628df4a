//! `cargo xtask bench xdp`: the XDP paths timed through BPF_PROG_TEST_RUN, in one run.
//!
//! Every path runs once per call (a SYN is rewritten into a SYN-ACK, so a repeated run would
//! time another path), many calls per sample, the median of the samples reported:
//! - pass:   a do-nothing program: what BPF_PROG_TEST_RUN itself costs per run;
//! - floor:  swaps MACs, addresses and ports and returns XDP_TX: the least a reply can cost;
//! - kernel: the same SYN answered with the kernel's own cookie helper (MSS only, checksums
//!   computed): what the kernel's XDP SYN proxy pays for a cookie SYN-ACK;
//! - through: a SYN to an unprotected port: parse, classify, protected-service lookup, pass;
//! - syn:    a SYN to a protected service answered with a cookie SYN-ACK (XDP_TX);
//! - syn-new: the same from a source never seen before (a random-source flood): it counts in
//!   the sketch, and stays out of the per-source counters;
//! - ack:    a third ACK whose cookie validates (ring-buffer event and flow entry);
//! - forged: a bare ACK with a forged cookie, dropped: read once, as a third ACK (our SYN-ACKs
//!   have offered a window for longer than a cookie lives);
//! - forged-0w: the same while our SYN-ACKs offer a zero window (`--early-data 0`): read
//!   twice, as a third ACK and as a window probe.
//!
//! Every row's frames must take the path it is named for, or the bench fails: one probe frame
//! per row first (its XDP action, and on the guard the counter of its path), then every
//! sample's counter moved by exactly the runs it timed.
//!
//! Ratios are to the floor and to the kernel-helper reference. The harness itself (pass) costs
//! nearly as much as the floor: read the floor as "the harness plus a swap".

use std::io::Write;

use anyhow::{Result, bail};
use synguard::{
    clock::cookie_counter_now, config::service::ProtectedService, dataplane::object,
    dataplane::privilege, dataplane::test_run::DataPlane, lab,
};
use synguard_common::{
    checksum,
    cookie::{self, CookieKeys, CookieOptions},
    counters::{Counter, CounterBlock},
    maps::PolicySettings,
    segment::SynAckSettings,
    siphash::SipKey,
    test_frames::{CLIENT_ISN, ack_v4, flow_of, syn_v4},
    verdict::Action,
};

const SAMPLES: usize = 15;
const CALLS_PER_SAMPLE: usize = 1000;
const KEYS: CookieKeys = CookieKeys::new(SipKey { k0: 1, k1: 2 }, SipKey { k0: 3, k1: 4 }, 0);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// One row: which data plane runs it, its i-th call's frame, and the path its frames must
/// take: the XDP action, and on the guard the counter that says why.
struct Row<'a> {
    name: &'static str,
    plane: usize,
    frame_for: Box<dyn Fn(usize) -> Vec<u8> + 'a>,
    action: Action,
    counter: Option<Counter>,
}

/// The frame index of a row's probe: outside every sample's (a probe must not make a timed
/// frame's flow or source known).
const PROBE: usize = 40_000;

/// The counters that moved between two readings, for an error message.
fn moved(before: &CounterBlock, after: &CounterBlock) -> Vec<(&'static str, u64)> {
    Counter::ALL
        .iter()
        .map(|c| (c.name(), after.get(*c) - before.get(*c)))
        .filter(|(_, delta)| *delta > 0)
        .collect()
}

/// The counters of a guard plane (none for a lab plane).
fn counters_of(plane: &DataPlane, row: &Row) -> Result<Option<CounterBlock>> {
    row.counter.map(|_| plane.counters()).transpose()
}

/// Fails unless `row`'s probe frame takes the row's path.
fn probe(plane: &mut DataPlane, row: &Row) -> Result<()> {
    let before = counters_of(plane, row)?;
    let action = plane.run(&(row.frame_for)(PROBE))?.action()?;
    if action != row.action {
        bail!(
            "bench row {}: XDP action {action:?}, not {:?}",
            row.name,
            row.action
        );
    }
    check_counter(plane, row, before, 1)
}

/// Fails unless the row's counter moved by exactly `runs` since `before`.
fn check_counter(
    plane: &DataPlane,
    row: &Row,
    before: Option<CounterBlock>,
    runs: u64,
) -> Result<()> {
    let (Some(counter), Some(before)) = (row.counter, before) else {
        return Ok(());
    };
    let after = plane.counters()?;
    let delta = after.get(counter) - before.get(counter);
    if delta != runs {
        bail!(
            "bench row {}: {} moved by {delta} in {runs} runs (moved: {:?}): the frames took \
             another path",
            row.name,
            counter.name(),
            moved(&before, &after)
        );
    }
    Ok(())
}

/// Per row, the median over samples of the mean ns per run. Interleaved: sample k of every
/// row runs before sample k + 1 of any, so the machine's drift hits every row alike.
fn measure(planes: &mut [DataPlane], rows: &[Row]) -> Result<Vec<f64>> {
    let frames: Vec<Vec<Vec<u8>>> = rows
        .iter()
        .map(|row| {
            (0..SAMPLES * CALLS_PER_SAMPLE)
                .map(&row.frame_for)
                .collect()
        })
        .collect();
    for row in rows {
        probe(&mut planes[row.plane], row)?;
    }
    let mut samples = vec![Vec::new(); rows.len()];
    for sample in 0..SAMPLES {
        for (index, row) in rows.iter().enumerate() {
            let plane = &mut planes[row.plane];
            let calls = &frames[index][sample * CALLS_PER_SAMPLE..][..CALLS_PER_SAMPLE];
            let before = counters_of(plane, row)?;
            let mut total = 0u64;
            for frame in calls {
                total += plane.time_once(frame)?;
            }
            check_counter(plane, row, before, CALLS_PER_SAMPLE as u64)?;
            samples[index].push(total as f64 / CALLS_PER_SAMPLE as f64);
            // Keep the event ring from filling: a full ring would time the cheaper lost-event
            // path.
            plane.events()?;
        }
    }
    Ok(samples.into_iter().map(median).collect())
}

/// A third ACK from client port `port` echoing a valid cookie.
fn valid_ack(port: u16, counter: u32) -> Vec<u8> {
    let mut frame = ack_v4(CLIENT_ISN.wrapping_add(1), 0, None);
    patch(&mut frame, 34, port.to_be_bytes());
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
    patch(&mut frame, 42, cookie.wrapping_add(1).to_be_bytes());
    frame
}

/// Writes `bytes` at `at` (an even offset: a TCP field, or the IPv4 source address) of an
/// untagged IPv4 TCP frame, keeping its checksums right (RFC 1624): the guard checks the TCP
/// checksum of what it answers.
fn patch<const N: usize>(frame: &mut [u8], at: usize, bytes: [u8; N]) {
    let old: [u8; N] = frame[at..at + N].try_into().expect("N bytes");
    frame[at..at + N].copy_from_slice(&bytes);
    let mut update = |field: usize| {
        let sum = u16::from_be_bytes([frame[field], frame[field + 1]]);
        frame[field..field + 2]
            .copy_from_slice(&checksum::replace(sum, &old, &bytes).to_be_bytes());
    };
    // The TCP checksum covers the addresses through its pseudo-header.
    update(14 + 20 + 16);
    if at < 14 + 20 {
        update(14 + 10);
    }
}

/// `frame` from the i-th source of 198.18.0.0/15.
fn from_source(frame: &[u8], i: usize) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let host = 0x0001_0000 + i as u32; // 198.18.1.0 onwards
    patch(&mut frame, 26, (0xc612_0000 | host).to_be_bytes());
    frame
}

fn main() -> Result<()> {
    privilege::require_xdp_privileges("the XDP benchmark")?;
    let protected: ProtectedService = "198.19.1.0/24:80".parse()?;
    // Indexes into `planes`: `guard` offers a window in its SYN-ACKs (the default),
    // `zero_window` none (`--early-data 0`).
    let (pass, floor, kernel, guard, zero_window) = (0, 1, 2, 3, 4);
    let mut planes = [
        DataPlane::load_lab(lab::PEER_PASS_PROGRAM)?,
        DataPlane::load_lab(lab::BENCH_FLOOR_PROGRAM)?,
        DataPlane::load_lab(lab::BENCH_KERNEL_COOKIE_PROGRAM)?,
        DataPlane::load(object::GUARD_PROGRAM)?,
        DataPlane::load(object::GUARD_PROGRAM)?,
    ];
    let now = cookie_counter_now();
    for (plane, window) in [(guard, SynAckSettings::default().window), (zero_window, 0)] {
        let plane = &mut planes[plane];
        plane.configure(&KEYS, std::slice::from_ref(&protected))?;
        // As `synguard run` sets it by default, but with a SYN rate no row reaches: the rows
        // time the cookie paths, not the drop of an over-rate SYN.
        plane.set_policy_settings(&PolicySettings {
            syn_rate: 1 << 30,
            syn_burst: 1 << 30,
            track_after: 32,
            ..PolicySettings::default()
        })?;
        // A guard in its steady state: its last zero-window cookie expired long ago.
        let settings = SynAckSettings {
            window,
            ..SynAckSettings::default()
        };
        for settings in [
            SynAckSettings {
                window: 0,
                ..settings
            },
            settings,
        ] {
            plane.set_syn_ack_settings(&settings, now - 3)?;
        }
    }

    let syn = syn_v4(0);
    let mut unprotected = syn.clone();
    unprotected[36..38].copy_from_slice(&81u16.to_be_bytes());
    let forged = ack_v4(
        CLIENT_ISN.wrapping_add(1),
        (now & 3) << 30 | 0x1234_5677,
        None,
    );
    let counter = now;
    let row = |name, plane, frame_for: Box<dyn Fn(usize) -> Vec<u8>>, (action, counter)| Row {
        name,
        plane,
        frame_for,
        action,
        counter,
    };
    let answered = (Action::Tx, None);
    let same = |frame: &Vec<u8>| {
        let frame = frame.clone();
        Box::new(move |_| frame.clone()) as Box<dyn Fn(usize) -> Vec<u8>>
    };
    let rows = [
        row("pass", pass, same(&syn), (Action::Pass, None)),
        row("floor", floor, same(&syn), answered),
        row("kernel", kernel, same(&syn), answered),
        row(
            "through",
            guard,
            same(&unprotected),
            (Action::Pass, Some(Counter::PassTcp)),
        ),
        row(
            "syn",
            guard,
            same(&syn),
            (Action::Tx, Some(Counter::TxSynCookie)),
        ),
        row(
            "syn-new",
            guard,
            {
                let syn = syn.clone();
                Box::new(move |i| from_source(&syn, i))
            },
            (Action::Tx, Some(Counter::TxSynCookie)),
        ),
        row(
            "ack",
            guard,
            Box::new(move |i| valid_ack(1024 + i as u16, counter)),
            (Action::Pass, Some(Counter::CookieValid)),
        ),
        row(
            "forged",
            guard,
            same(&forged),
            (Action::Drop, Some(Counter::DropCookieInvalid)),
        ),
        row(
            "forged-0w",
            zero_window,
            same(&forged),
            (Action::Drop, Some(Counter::DropCookieInvalid)),
        ),
    ];
    let rows: Vec<(&str, f64)> = rows
        .iter()
        .map(|row| row.name)
        .zip(measure(&mut planes, &rows)?)
        .collect();
    let (floor_ns, kernel_ns) = (rows[1].1, rows[2].1);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "XDP paths, BPF_PROG_TEST_RUN, median of {SAMPLES} interleaved samples x {CALLS_PER_SAMPLE} runs"
    )?;
    writeln!(
        out,
        "{:<9} {:>10} {:>10} {:>16}",
        "path", "ns/packet", "vs floor", "vs kernel cookie"
    )?;
    let mut json = Vec::new();
    for (name, ns) in rows {
        let (to_floor, to_kernel) = (ns / floor_ns, ns / kernel_ns);
        writeln!(
            out,
            "{name:<9} {ns:>10.1} {to_floor:>9.2}x {to_kernel:>15.2}x"
        )?;
        json.push(serde_json::json!({"path": name, "ns_per_packet": ns, "ratio_to_floor": to_floor, "ratio_to_kernel_cookie": to_kernel}));
    }
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results");
    std::fs::create_dir_all(&results)?;
    let path = results.join("bench-xdp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    writeln!(out, "written to {}", path.display())?;
    Ok(())
}
