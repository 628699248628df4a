//! Reading the per-CPU counters and printing them once per interval.

use std::time::Duration;

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use serde_json::{Value, json};
use synguard_common::counters::{Counter, CounterBlock};

use crate::control::protocol::Stats;

/// One reading of the counters: every CPU's block and their sum.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub per_cpu: Vec<CounterBlock>,
    pub total: CounterBlock,
}

impl Reading {
    pub fn from_per_cpu(per_cpu: Vec<CounterBlock>) -> Self {
        let mut total = CounterBlock::default();
        for block in &per_cpu {
            total.accumulate(block);
        }
        Self { per_cpu, total }
    }
}

pub fn read(map: &PerCpuArray<MapData, CounterBlock>) -> Result<Reading> {
    let values = map.get(&0, 0)?;
    Ok(Reading::from_per_cpu(values.iter().copied().collect()))
}

fn per_second(now: u64, before: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        now.saturating_sub(before) as f64 / secs
    } else {
        0.0
    }
}

const HEADLINE: [Counter; 3] = [Counter::Seen, Counter::Passed, Counter::Dropped];

/// A human line: headline rates, the reasons that moved, running totals, per-CPU seen.
pub fn text_line(iface: &str, now: &Reading, before: &Reading, elapsed: Duration) -> String {
    let rate = |c: Counter| per_second(now.total.get(c), before.total.get(c), elapsed);
    let mut line = format!(
        "{iface}: seen {:.0}/s passed {:.0}/s dropped {:.0}/s",
        rate(Counter::Seen),
        rate(Counter::Passed),
        rate(Counter::Dropped)
    );
    let moved: Vec<String> = Counter::ALL
        .iter()
        .filter(|c| !HEADLINE.contains(c) && now.total.get(**c) != before.total.get(**c))
        .map(|c| format!("{} {:.0}/s", c.name(), rate(*c)))
        .collect();
    if !moved.is_empty() {
        line.push_str(&format!(" [{}]", moved.join(", ")));
    }
    line.push_str(&format!(
        " | total seen {} passed {} dropped {} | per-cpu seen {}",
        now.total.get(Counter::Seen),
        now.total.get(Counter::Passed),
        now.total.get(Counter::Dropped),
        now.per_cpu
            .iter()
            .map(|b| b.get(Counter::Seen).to_string())
            .collect::<Vec<_>>()
            .join("/")
    ));
    line
}

/// `synguard stats`: every counter's total and its rate over `elapsed` since `before` (none
/// without an earlier reading), and per-CPU seen.
pub fn stats(iface: &str, now: &Reading, before: Option<&Reading>, elapsed: Duration) -> Stats {
    let total = Counter::ALL
        .iter()
        .map(|&counter| (counter.name().to_string(), now.total.get(counter)))
        .collect();
    let per_second = before.map(|before| {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let rate = per_second(now.total.get(counter), before.total.get(counter), elapsed);
                (counter.name().to_string(), (rate * 10.0).round() / 10.0)
            })
            .collect()
    });
    Stats {
        iface: iface.to_string(),
        total,
        per_second,
        interval_s: elapsed.as_secs_f64(),
        per_cpu_seen: now.per_cpu.iter().map(|b| b.get(Counter::Seen)).collect(),
    }
}

/// The same as one JSON object (`synguard run --json`): the stats with their type.
pub fn json_line(iface: &str, now: &Reading, before: &Reading, elapsed: Duration) -> Value {
    let mut line = json!({ "type": "counters" });
    if let (Value::Object(line), Ok(Value::Object(fields))) = (
        &mut line,
        serde_json::to_value(stats(iface, now, Some(before), elapsed)),
    ) {
        line.extend(fields);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpus: &[&[(Counter, u64)]]) -> Reading {
        Reading::from_per_cpu(
            cpus.iter()
                .map(|values| {
                    let mut block = CounterBlock::default();
                    for (counter, value) in values.iter() {
                        block.values[*counter as usize] = *value;
                    }
                    block
                })
                .collect(),
        )
    }

    #[test]
    fn cpus_are_summed_and_rates_use_the_interval() {
        let before = reading(&[&[(Counter::Seen, 10)], &[(Counter::Seen, 0)]]);
        let now = reading(&[
            &[(Counter::Seen, 30), (Counter::Passed, 20)],
            &[
                (Counter::Seen, 20),
                (Counter::Passed, 20),
                (Counter::PassTcp, 40),
            ],
        ]);
        assert_eq!(now.total.get(Counter::Seen), 50);
        let json = json_line("eth0", &now, &before, Duration::from_secs(2));
        assert_eq!(json["total"]["seen"], 50);
        assert_eq!(json["per_second"]["seen"], 20.0);
        assert_eq!(json["per_second"]["pass_tcp"], 20.0);
        assert_eq!(json["per_cpu_seen"], json!([30, 20]));
        let text = text_line("eth0", &now, &before, Duration::from_secs(2));
        assert!(
            text.starts_with("eth0: seen 20/s passed 20/s dropped 0/s [pass_tcp 20/s]"),
            "{text}"
        );
        assert!(text.ends_with("per-cpu seen 30/20"), "{text}");
    }

    #[test]
    fn json_has_every_counter() {
        let json = json_line(
            "x",
            &Reading::default(),
            &Reading::default(),
            Duration::ZERO,
        );
        for counter in Counter::ALL {
            assert!(
                json["total"].get(counter.name()).is_some(),
                "{}",
                counter.name()
            );
        }
    }
}
