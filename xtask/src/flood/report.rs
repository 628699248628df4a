//! The flood lab's report: per scenario, one table row per generator and defense (Markdown
//! and JSON) and an SVG per generator with the legitimate client's success and connect
//! latency over time, the flood's start and end marked. Written under results/flood/.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use crate::{
    build::workspace_root,
    flood::{
        plan::{Case, Defense, Generator, Options, Scenario},
        probes::Reading,
    },
    guard_profile::{self, GuardProfile},
    legit_client::{self, Attempt, Summary},
    stats::{median, spread},
};

/// Width of the time bins of the plots, seconds.
const BIN_SECONDS: f64 = 0.5;
/// What "the guard holds" means (the flood lab's bar): legitimate success at least this...
pub const HOLD_SUCCESS_PERCENT: f64 = 99.9;
/// ...and a connect p99 at most this many times the run's own quiet baseline.
pub const HOLD_LATENCY_FACTOR: f64 = 2.0;

/// One scenario x generator x defense, measured.
#[derive(Clone, Debug)]
pub struct Run {
    pub scenario: Scenario,
    pub generator: Generator,
    pub defense: Defense,
    /// Which round of `--repeats` (from 1).
    pub repeat: u32,
    /// Flood start and end, seconds from the run's start.
    pub flood: (f64, f64),
    /// Run length, seconds (the last attempt's start).
    pub length: f64,
    /// Frames the attack side sent toward the guard per second (legit ones included, a few
    /// hundred), and of those what the veth could not queue (the guard's input was full).
    pub offered_pps: f64,
    pub queue_full_pps: f64,
    /// Frames per second back to the attack side: SYN-ACKs, RSTs (and the legit answers).
    pub answered_pps: f64,
    pub baseline: Summary,
    pub during: Summary,
    pub after: Summary,
    /// Percent of the whole machine (all CPUs): busy, and softirq (where XDP, netfilter and
    /// every namespace's TCP stack run).
    pub machine_busy_percent: f64,
    pub softirq_percent: f64,
    /// Percent of one CPU: the guard (its links' receive threads, where XDP and netfilter
    /// run, plus the synguard controller) and the lab server process.
    pub guard_process_percent: Option<f64>,
    pub server_process_percent: Option<f64>,
    /// Per second during the flood: drops by reason, and the defenses' own answers.
    pub drops: Vec<(String, f64)>,
    pub answers: Vec<(String, f64)>,
    /// Time bins: start second, attempts, success %, connect p99 ms.
    pub series: Vec<(f64, usize, f64, f64)>,
    /// Where the guard's CPU went during the flood (`--profile`).
    pub guard_profile: Option<GuardProfile>,
}

/// Counters that count packets a defense (or the lack of one) dropped.
fn is_drop(name: &str) -> bool {
    let (source, counter) = name.split_once('.').unwrap_or(("", name));
    match source {
        "synguard" => counter.starts_with("drop_") && counter != "drop_awaiting_backend",
        "server" => matches!(
            counter,
            "TcpExtListenOverflows"
                | "TcpExtListenDrops"
                | "TcpExtTCPReqQFullDrop"
                | "TcpExtSyncookiesFailed"
        ),
        "guard" => counter == "TcpExtSyncookiesFailed",
        "synproxy" => counter == "cookie_invalid",
        _ => false,
    }
}

/// Counters of SYNs a defense answered.
fn is_answer(name: &str) -> bool {
    matches!(
        name,
        "synguard.tx_syn_cookie"
            | "synguard.pass_admitted"
            | "server.TcpExtSyncookiesSent"
            | "synproxy.syn_received"
    )
}

impl Run {
    pub fn new(
        case: Case,
        attempts: &[Attempt],
        flood: (f64, f64),
        before: &Reading,
        after: &Reading,
    ) -> Run {
        let seconds = match (before.at, after.at) {
            (Some(start), Some(end)) => end.duration_since(start).as_secs_f64().max(1e-3),
            _ => flood.1 - flood.0,
        };
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        let cpu_total = after.cpu_total.saturating_sub(before.cpu_total).max(1) as f64;
        // Jiffies of all CPUs per wall second, to turn a process's jiffies into % of a CPU.
        let jiffies_per_cpu_second = cpu_total / seconds / crate::lab::machine_cpus() as f64;
        let process = |now: Option<u64>, then: Option<u64>| {
            Some(100.0 * now?.saturating_sub(then?) as f64 / (jiffies_per_cpu_second * seconds))
        };
        let mut drops = Vec::new();
        let mut answers = Vec::new();
        for (name, value) in &after.counters {
            let then = before
                .counters
                .get(name)
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let per_second = rate(value.as_u64().unwrap_or(0), then);
            if per_second <= 0.0 {
                continue;
            }
            if is_drop(name) {
                drops.push((name.clone(), per_second));
            } else if is_answer(name) {
                answers.push((name.clone(), per_second));
            }
        }
        let queue_full_pps = rate(after.client_tx_dropped, before.client_tx_dropped);
        if queue_full_pps > 0.0 {
            drops.push(("link.queue_full".into(), queue_full_pps));
        }
        drops.sort_by(|a, b| b.1.total_cmp(&a.1));
        let length = attempts.last().map_or(flood.1, |a| a.started);
        Run {
            scenario: case.scenario,
            generator: case.generator,
            defense: case.defense,
            repeat: 1,
            flood,
            length,
            offered_pps: rate(after.client_tx, before.client_tx) + queue_full_pps,
            queue_full_pps,
            answered_pps: rate(after.client_rx, before.client_rx),
            baseline: legit_client::summarise(attempts, 0.0, flood.0),
            during: legit_client::summarise(attempts, flood.0, flood.1),
            after: legit_client::summarise(attempts, flood.1, f64::INFINITY),
            machine_busy_percent: 100.0 * after.cpu_busy.saturating_sub(before.cpu_busy) as f64
                / cpu_total,
            softirq_percent: 100.0 * after.cpu_softirq.saturating_sub(before.cpu_softirq) as f64
                / cpu_total,
            guard_process_percent: process(after.guard_process, before.guard_process),
            server_process_percent: process(after.server_process, before.server_process),
            drops,
            answers,
            series: series(attempts, length),
            guard_profile: None,
        }
    }

    /// Whether the defense held: legitimate success and connect p99 within the bar.
    pub fn holds(&self) -> bool {
        self.during.success_percent >= HOLD_SUCCESS_PERCENT
            && self.during.connect_p99_ms <= HOLD_LATENCY_FACTOR * self.baseline.connect_p99_ms
    }

    pub fn one_line(&self) -> String {
        format!(
            "attack {:.0} pps offered, {:.0}/s answered; legit {:.2} % ok ({} attempts), connect p50 {:.2} ms p99 {:.2} ms (baseline p99 {:.2} ms){}",
            self.offered_pps,
            self.answered_pps,
            self.during.success_percent,
            self.during.attempts,
            self.during.connect_p50_ms,
            self.during.connect_p99_ms,
            self.baseline.connect_p99_ms,
            if self.holds() { "; holds" } else { "" }
        )
    }

    pub fn to_json(&self) -> Value {
        let summary = |s: &Summary| {
            json!({
                "attempts": s.attempts,
                "succeeded": s.succeeded,
                "success_percent": finite(s.success_percent),
                "connect_p50_ms": finite(s.connect_p50_ms),
                "connect_p99_ms": finite(s.connect_p99_ms),
                "request_p99_ms": finite(s.request_p99_ms),
                "failures": s.failures.iter().map(|(n, c)| json!({"reason": n, "count": c})).collect::<Vec<_>>(),
            })
        };
        let rates = |list: &[(String, f64)]| {
            list.iter()
                .map(|(name, rate)| (name.clone(), json!(round(*rate))))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "scenario": self.scenario.name(),
            "generator": self.generator.name(),
            "defense": self.defense.name(),
            "repeat": self.repeat,
            "flood_start_s": round(self.flood.0),
            "flood_end_s": round(self.flood.1),
            "offered_attack_pps": round(self.offered_pps),
            "queue_full_pps": round(self.queue_full_pps),
            "answered_pps": round(self.answered_pps),
            "legit_baseline": summary(&self.baseline),
            "legit_during_flood": summary(&self.during),
            "legit_after_flood": summary(&self.after),
            "holds": self.holds(),
            "machine_busy_percent": round(self.machine_busy_percent),
            "softirq_percent": round(self.softirq_percent),
            "guard_process_percent": self.guard_process_percent.map(round),
            "server_process_percent": self.server_process_percent.map(round),
            "drops_per_s": rates(&self.drops),
            "answers_per_s": rates(&self.answers),
            "guard_profile": self.guard_profile.as_ref().map(|profile| json!({
                "kinds_percent": rates(&profile.kinds),
                "top_symbols_percent": rates(&profile.top),
            })),
            "series": self.series.iter().map(|(t, n, ok, p99)| json!({
                "t_s": t, "attempts": n, "success_percent": finite(*ok), "connect_p99_ms": finite(*p99)
            })).collect::<Vec<_>>(),
        })
    }
}

/// One generator and defense over its rounds: the median of each figure, the spread of the
/// two that decide whether it holds, and how many rounds held.
#[derive(Clone, Debug, PartialEq)]
pub struct Medians {
    pub generator: Generator,
    pub defense: Defense,
    pub rounds: usize,
    pub held: usize,
    pub offered_pps: f64,
    pub answered_pps: f64,
    pub success_percent: (f64, f64, f64),
    pub connect_p99_ms: (f64, f64, f64),
    pub baseline_p99_ms: f64,
    /// Median over rounds of each round's p99 / its own baseline p99.
    pub p99_over_baseline: f64,
    pub guard_percent: Option<f64>,
}

/// Medians per generator and defense, in the order the runs came.
pub fn medians(runs: &[Run]) -> Vec<Medians> {
    let mut groups: Vec<(Generator, Defense)> = Vec::new();
    for run in runs {
        if !groups.contains(&(run.generator, run.defense)) {
            groups.push((run.generator, run.defense));
        }
    }
    groups
        .into_iter()
        .map(|(generator, defense)| {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| (r.generator, r.defense) == (generator, defense))
                .collect();
            let each = |figure: fn(&Run) -> f64| of.iter().map(move |r| figure(r));
            let guard: Vec<f64> = of.iter().filter_map(|r| r.guard_process_percent).collect();
            Medians {
                generator,
                defense,
                rounds: of.len(),
                held: of.iter().filter(|r| r.holds()).count(),
                offered_pps: median(each(|r| r.offered_pps)),
                answered_pps: median(each(|r| r.answered_pps)),
                success_percent: spread(each(|r| r.during.success_percent)),
                connect_p99_ms: spread(each(|r| r.during.connect_p99_ms)),
                baseline_p99_ms: median(each(|r| r.baseline.connect_p99_ms)),
                p99_over_baseline: median(each(|r| {
                    r.during.connect_p99_ms / r.baseline.connect_p99_ms
                })),
                guard_percent: (!guard.is_empty()).then(|| median(guard)),
            }
        })
        .collect()
}

impl Medians {
    fn to_json(&self) -> Value {
        let spread = |(min, median, max): (f64, f64, f64)| json!({"min": finite(min), "median": finite(median), "max": finite(max)});
        json!({
            "generator": self.generator.name(),
            "defense": self.defense.name(),
            "rounds": self.rounds,
            "rounds_held": self.held,
            "offered_attack_pps": finite(self.offered_pps),
            "answered_pps": finite(self.answered_pps),
            "legit_success_percent": spread(self.success_percent),
            "connect_p99_ms": spread(self.connect_p99_ms),
            "baseline_p99_ms": finite(self.baseline_p99_ms),
            "p99_over_baseline": finite(self.p99_over_baseline),
            "guard_process_percent": self.guard_percent.map(round),
        })
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(round(value))
    } else {
        Value::Null
    }
}

fn series(attempts: &[Attempt], length: f64) -> Vec<(f64, usize, f64, f64)> {
    let bins = (length / BIN_SECONDS).ceil() as usize + 1;
    (0..bins)
        .map(|bin| {
            let from = bin as f64 * BIN_SECONDS;
            let s = legit_client::summarise(attempts, from, from + BIN_SECONDS);
            (from, s.attempts, s.success_percent, s.connect_p99_ms)
        })
        .collect()
}

/// Writes results/flood/<scenario>.{md,json} and <scenario>-<generator>.svg; returns the
/// Markdown file's path.
pub fn write(scenario: Scenario, options: &Options, runs: &[Run]) -> Result<PathBuf> {
    let dir = workspace_root().join("results").join("flood");
    std::fs::create_dir_all(&dir)?;
    let name = scenario.name();
    let json = json!({
        "scenario": name,
        "flood_seconds": options.seconds,
        "attack_rate_setting": options.attack_rate,
        "legit_connections_per_s": options.legit_rate,
        "client_timestamps": options.client_timestamps,
        "guard_args": options.guard_args,
        "machine_cpus": crate::lab::machine_cpus(),
        "repeats": options.repeats,
        "medians": medians(runs).iter().map(Medians::to_json).collect::<Vec<_>>(),
        "runs": runs.iter().map(Run::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    let markdown = dir.join(format!("{name}.md"));
    std::fs::write(&markdown, markdown_table(scenario, options, runs))?;
    for generator in Generator::ALL {
        // The first round: one line per defense keeps the plot readable.
        let of_generator: Vec<&Run> = runs
            .iter()
            .filter(|r| r.generator == generator && r.repeat == 1)
            .collect();
        if !of_generator.is_empty() {
            plot(
                &dir.join(format!("{name}-{}.svg", generator.name())),
                &format!("{name}, {} (round 1)", generator.name()),
                &of_generator,
            )?;
        }
    }
    Ok(markdown)
}

fn markdown_table(scenario: Scenario, options: &Options, runs: &[Run]) -> String {
    let mut out = format!(
        "# Flood lab: {}\n\n{} s floods (packet-socket and live-frames generators: {}); legitimate client: {} connections/s, TCP timestamps {}; \
         baseline = the same run's {} s before the flood. Rates are per second during the flood. \
         CPU: machine % of all CPUs (busy, and softirq run outside the guard's receive threads); \
         guard % of one CPU: the busy time of the CPU its links' threaded-NAPI receive threads \
         have to themselves (XDP, netfilter, routing, and the softirq work they trigger) plus \
         the synguard controller; server % of one CPU: the server process. \"holds\": legit success >= {HOLD_SUCCESS_PERCENT} % \
         and connect p99 <= {HOLD_LATENCY_FACTOR}x baseline.\n\n",
        scenario.name(),
        options.seconds,
        if options.attack_rate == 0 {
            "as fast as it can".to_string()
        } else {
            format!("{} frames/s", options.attack_rate)
        },
        options.legit_rate,
        if options.client_timestamps {
            "on"
        } else {
            "off"
        },
        runs.first().map_or(0.0, |r| r.flood.0).round(),
    );
    if !options.guard_args.is_empty() {
        out.push_str(&format!(
            "synguard ran with `{}`.\n\n",
            options.guard_args.join(" ")
        ));
    }
    let ms = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "-".into()
        }
    };
    if options.repeats > 1 {
        out.push_str(&format!(
            "## Medians over {} rounds\n\n\
             | generator | defense | attack pps offered | answered/s | legit ok % median (min-max) | connect p99 ms median (min-max) | baseline p99 ms | p99 / baseline | guard % | held |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            options.repeats
        ));
        for m in medians(runs) {
            let (ok_min, ok, ok_max) = m.success_percent;
            let (p99_min, p99, p99_max) = m.connect_p99_ms;
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {} ({}-{}) | {} ({}-{}) | {} | {:.1}x | {} | {} of {} |\n",
                m.generator.name(),
                m.defense.name(),
                m.offered_pps,
                m.answered_pps,
                ms(ok),
                ms(ok_min),
                ms(ok_max),
                ms(p99),
                ms(p99_min),
                ms(p99_max),
                ms(m.baseline_p99_ms),
                m.p99_over_baseline,
                m.guard_percent.map_or("-".into(), |p| format!("{p:.0}")),
                m.held,
                m.rounds,
            ));
        }
        out.push_str("\n## Every round\n\n");
    }
    out.push_str(
        "| round | generator | defense | attack pps offered | answered/s | legit ok % | connect p50 / p99 ms | baseline p99 ms | request p99 ms | busy / softirq % | guard % | server % | holds | drops/s by reason | answers/s |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n",
    );
    let list = |items: &[(String, f64)]| {
        if items.is_empty() {
            "-".to_string()
        } else {
            items
                .iter()
                .map(|(n, r)| format!("{n} {r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for run in runs {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {} ({}/{}) | {} / {} | {} | {} | {:.0} / {:.0} | {} | {} | {} | {} | {} |\n",
            run.repeat,
            run.generator.name(),
            run.defense.name(),
            run.offered_pps,
            run.answered_pps,
            ms(run.during.success_percent),
            run.during.succeeded,
            run.during.attempts,
            ms(run.during.connect_p50_ms),
            ms(run.during.connect_p99_ms),
            ms(run.baseline.connect_p99_ms),
            ms(run.during.request_p99_ms),
            run.machine_busy_percent,
            run.softirq_percent,
            run.guard_process_percent.map_or("-".into(), |p| format!("{p:.0}")),
            run.server_process_percent.map_or("-".into(), |p| format!("{p:.0}")),
            if run.holds() { "yes" } else { "no" },
            list(&run.drops),
            list(&run.answers),
        ));
    }
    if runs.iter().any(|run| run.guard_profile.is_some()) {
        out.push_str(&profile_table(runs));
    }
    out
}

/// Where the guard's CPU went in each profiled run: percent of the samples by kind of work,
/// and the costliest symbols.
fn profile_table(runs: &[Run]) -> String {
    let kinds = guard_profile::kind_names();
    let mut out = format!(
        "\n## Where the guard's CPU went\n\n`perf record` on the CPU the guard's receive threads have \
         to themselves, for the flood's length; percent of its samples (idle included), by kind of \
         work (kernel symbols by prefix: approximate) and the costliest symbols.\n\n\
         | round | generator | defense | {} | costliest symbols |\n|---:|---|---|{}---|\n",
        kinds.join(" | "),
        "---:|".repeat(kinds.len()),
    );
    for run in runs {
        let Some(profile) = &run.guard_profile else {
            continue;
        };
        let shares: Vec<String> = kinds
            .iter()
            .map(|kind| {
                let share = profile.kinds.iter().find(|(k, _)| k == kind);
                format!("{:.1}", share.map_or(0.0, |(_, s)| *s))
            })
            .collect();
        let top: Vec<String> = profile
            .top
            .iter()
            .map(|(symbol, share)| format!("{symbol} {share:.1}"))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            run.repeat,
            run.generator.name(),
            run.defense.name(),
            shares.join(" | "),
            top.join(", "),
        ));
    }
    out
}

fn plot(path: &std::path::Path, title: &str, runs: &[&Run]) -> Result<()> {
    use plotters::prelude::*;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1100, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(380);
        let length = runs.iter().map(|r| r.length).fold(1.0, f64::max) + BIN_SECONDS;
        let flood = runs[0].flood;
        let mut success = ChartBuilder::on(&top)
            .caption(
                format!("{title}: legitimate connections that succeeded (%)"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..length, 0.0..105.0)?;
        success
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("success %")
            .draw()?;
        let connect_max = runs
            .iter()
            .flat_map(|r| r.series.iter().map(|s| s.3))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
            * 2.0;
        let mut latency = ChartBuilder::on(&bottom)
            .caption(
                format!("{title}: connect latency p99 per {BIN_SECONDS} s (ms, log)"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..length, (0.01..connect_max).log_scale())?;
        latency
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("connect p99 ms")
            .draw()?;
        for (index, run) in runs.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let label = run.defense.name();
            success
                .draw_series(LineSeries::new(
                    run.series
                        .iter()
                        .filter(|s| s.1 > 0)
                        .map(|s| (s.0 + BIN_SECONDS / 2.0, s.2)),
                    color.stroke_width(2),
                ))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            latency
                .draw_series(LineSeries::new(
                    run.series
                        .iter()
                        .filter(|s| s.3.is_finite())
                        .map(|s| (s.0 + BIN_SECONDS / 2.0, s.3.max(0.01))),
                    color.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        for edge in [flood.0, flood.1] {
            let marker = BLACK.mix(0.6).stroke_width(1);
            success.draw_series(std::iter::once(PathElement::new(
                [(edge, 0.0), (edge, 105.0)],
                marker,
            )))?;
            latency.draw_series(std::iter::once(PathElement::new(
                [(edge, 0.01), (edge, connect_max)],
                marker,
            )))?;
        }
        success
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        latency
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|error| anyhow!("drawing {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_answers_are_told_apart() {
        assert!(is_drop("synguard.drop_cookie_invalid"));
        assert!(!is_drop("synguard.drop_awaiting_backend"));
        assert!(is_drop("server.TcpExtListenDrops"));
        assert!(is_drop("synproxy.cookie_invalid"));
        assert!(!is_drop("synguard.tx_syn_cookie"));
        assert!(is_answer("synguard.tx_syn_cookie"));
        assert!(is_answer("server.TcpExtSyncookiesSent"));
        assert!(!is_answer("server.TcpExtListenDrops"));
    }

    #[test]
    fn the_report_names_the_guards_extra_arguments() {
        let mut options = Options {
            scenarios: vec![Scenario::RandomSyn],
            defenses: vec![],
            generators: vec![],
            seconds: 8,
            attack_rate: 0,
            legit_rate: 200,
            client_timestamps: true,
            repeats: 1,
            profile: false,
            guard_args: vec!["--early-data=0".into()],
        };
        let table = markdown_table(Scenario::RandomSyn, &options, &[]);
        assert!(
            table.contains("synguard ran with `--early-data=0`."),
            "{table}"
        );
        options.guard_args.clear();
        let table = markdown_table(Scenario::RandomSyn, &options, &[]);
        assert!(!table.contains("synguard ran with"), "{table}");
    }
}
