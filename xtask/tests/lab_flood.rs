//! The flood lab's smoke scenario (the full comparison is `cargo xtask flood`, kept out of
//! the tests): a short random-source SYN flood from the fast generator against synguard in
//! `always` mode, with the legitimate client running without TCP timestamps (its options
//! ride only in the cookie). The guard must hold: every SYN answered with a cookie, the
//! real client's connections succeed.

mod support;

use std::path::Path;

use xtask::flood::{
    plan::{Case, Defense, Generator, Options, Scenario},
    run::run_one,
};

#[test]
fn a_random_source_syn_flood_leaves_real_clients_connecting() {
    xtask::bootstrap::require_root().expect("the lab tests need root");
    let options = Options {
        scenarios: vec![Scenario::RandomSyn],
        defenses: vec![Defense::SynguardAlways],
        generators: vec![Generator::PacketSocket],
        seconds: 3,
        // Well under what the guard takes on a 2-core VM: this asserts it holds, the bench
        // measures how far.
        attack_rate: 50_000,
        legit_rate: 100,
        client_timestamps: false,
        repeats: 1,
        profile: true,
        guard_args: Vec::new(),
    };
    let run = run_one(
        Path::new(env!("CARGO_BIN_EXE_xtask")),
        &support::synguard_bin(),
        Case {
            scenario: Scenario::RandomSyn,
            generator: Generator::PacketSocket,
            defense: Defense::SynguardAlways,
        },
        &options,
    )
    .expect("flood run");
    println!("{}", run.one_line());
    assert!(
        run.offered_pps > 20_000.0,
        "the flood did not run: {:.0} pps",
        run.offered_pps
    );
    // Every SYN answered: the two rates are read over windows a few ms apart, nothing more.
    let cookies = value_of(&run.answers, "synguard.tx_syn_cookie");
    assert!(
        cookies > 0.99 * run.offered_pps,
        "{cookies:.0} cookies/s for {:.0} SYN/s offered",
        run.offered_pps
    );
    assert!(
        run.baseline.attempts > 100 && run.during.attempts > 200,
        "too few legitimate attempts: {:?} / {:?}",
        run.baseline,
        run.during
    );
    assert_eq!(run.baseline.success_percent, 100.0, "{:?}", run.baseline);
    assert!(
        run.during.success_percent >= 99.5,
        "legitimate success during the flood: {:?}",
        run.during
    );
    // The guard's CPU ran synguard's programs for the flood, as its profile shows: their
    // share of the core, spread over the SYNs answered, is a plausible cost per SYN (a
    // profile that missed them reads near zero; the data plane's own bench puts a SYN at a
    // few hundred ns).
    let profile = run.guard_profile.expect("a profile of the guard's CPU");
    let xdp = value_of(&profile.kinds, "XDP programs");
    let ns_per_syn = xdp / 100.0 * 1e9 / cookies;
    assert!(
        (50.0..5_000.0).contains(&ns_per_syn),
        "XDP programs at {xdp:.1} % of the guard's CPU, {ns_per_syn:.0} ns per SYN answered: \
         {profile:?}"
    );
    assert!(
        profile
            .top
            .iter()
            .any(|(symbol, _)| symbol == "XDP client_segment"),
        "{profile:?}"
    );
}

/// The figure named `name` in a report's (name, figure) list; a name missing from it fails
/// the test.
fn value_of(list: &[(String, f64)], name: &str) -> f64 {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| *value)
        .unwrap_or_else(|| panic!("no figure {name} in {list:?}"))
}
