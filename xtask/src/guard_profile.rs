//! `cargo xtask flood --profile`: where the guard's core goes during a flood. `perf record`
//! samples the CPU the guard's receive threads have to themselves for the flood's length;
//! `perf report` gives each kernel symbol's share of the samples, which are summed into a
//! few kinds of work (XDP programs, their map lookups, netfilter, the TCP/IP stack, veth and
//! buffer handling, idle) so that defenses can be compared by what their CPU time buys.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// What a flood cost the guard's core, by kind of work and by symbol (percent of samples).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuardProfile {
    pub kinds: Vec<(String, f64)>,
    /// The costliest symbols, BPF programs by name.
    pub top: Vec<(String, f64)>,
}

/// Symbols in the profile's `top`.
const TOP_SYMBOLS: usize = 8;

/// Kinds of work, by symbol prefixes (space-separated); the first kind a symbol matches counts
/// it, and one that matches none counts as `other`. Prefixes, so the split is approximate by a
/// few percent.
const KINDS: [(&str, &str); 6] = [
    ("XDP programs", "bpf_prog_"),
    (
        "BPF maps, helpers",
        "trie_ htab_ __htab lookup_nulls_elem bpf_ __bpf pcpu_ ringbuf",
    ),
    (
        "netfilter, conntrack",
        "nf_ __nf_ nft_ __nft synproxy ipv4_conntrack ipt_ tcp_packet",
    ),
    (
        "TCP/IP stack",
        "tcp_ __tcp ip_ __ip ipv4_ inet_ __inet inet6_ fib_ dst_ icmp_ raw_ ip6_ ipv6_ __sk_ sk_ \
         sock_rfree csum_",
    ),
    (
        "veth, buffers, memory",
        "veth_ skb_ __skb kfree_skb consume_skb napi_ __napi kmem_ __kmem kfree __kmalloc \
         kmalloc slab_ __slab ___slab page_ __page __pi_memcpy memcpy memset memmove sock_wfree \
         sock_def_write_space netif_ __netif net_rx_action dev_ __dev build_skb __build_skb \
         xdp_ __xdp put_cpu_partial __memcg __free_ free_ ptr_ring",
    ),
    (
        "idle",
        "pv_native_safe_halt native_safe_halt default_idle cpu_idle cpuidle poll_idle haltpoll \
         intel_idle acpi_idle do_idle arch_cpu_idle mwait_idle",
    ),
];

/// The kinds of work, in report order.
pub fn kind_names() -> Vec<&'static str> {
    KINDS
        .iter()
        .map(|(kind, _)| *kind)
        .chain(["other"])
        .collect()
}

/// A `perf record` of the guard's core, running.
pub struct Recording {
    perf: Child,
    data: PathBuf,
}

/// Samples `cpu` for `seconds` into `data`; [`Recording::finish`] reads it.
pub fn start(cpu: usize, seconds: u32, data: &Path) -> Result<Recording> {
    let perf = Command::new("perf")
        .args(["record", "-q", "-C", &cpu.to_string(), "-o"])
        .arg(data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record (install it with `apt-get install linux-perf`)")?;
    Ok(Recording {
        perf,
        data: data.to_path_buf(),
    })
}

impl Recording {
    /// Waits for the recording's end and summarises it.
    pub fn finish(mut self) -> Result<GuardProfile> {
        let status = self.perf.wait()?;
        if !status.success() {
            bail!("perf record on the guard's core failed ({status})");
        }
        let report = cmd::stdout(Command::new("perf").args([
            "report",
            "--stdio",
            "-q",
            "--no-children",
            "--sort",
            "sym",
            "-g",
            "none",
            "-i",
            self.data.to_str().context("non-UTF-8 path")?,
        ]))?;
        let _ = std::fs::remove_file(&self.data);
        Ok(summarise(&parse_report(&report)))
    }
}

/// `perf report --stdio -q --no-children --sort sym` lines (`  12.34%  [k] symbol`) as
/// (symbol, percent); other lines are skipped.
fn parse_report(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let percent = fields.next()?.strip_suffix('%')?.parse().ok()?;
            let _space = fields.next().filter(|f| f.starts_with('['))?;
            let symbol = fields.collect::<Vec<_>>().join(" ");
            (!symbol.is_empty()).then_some((symbol, percent))
        })
        .collect()
}

/// The kind of work a symbol does (see [`KINDS`]).
fn kind_of(symbol: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(_, prefixes)| prefixes.split_whitespace().any(|p| symbol.starts_with(p)))
        .map_or("other", |(kind, _)| kind)
}

/// A BPF program's symbol (`bpf_prog_<tag>_<name>`) as `XDP <name>`; others as they are.
fn readable(symbol: &str) -> String {
    match symbol
        .strip_prefix("bpf_prog_")
        .and_then(|rest| rest.split_once('_'))
    {
        Some((_tag, name)) => format!("XDP {name}"),
        None => symbol.to_string(),
    }
}

fn summarise(symbols: &[(String, f64)]) -> GuardProfile {
    // One pass: each symbol's share goes to its kind.
    let mut kinds: Vec<(String, f64)> = kind_names()
        .into_iter()
        .map(|kind| (kind.to_string(), 0.0))
        .collect();
    for (symbol, percent) in symbols {
        let kind = kind_of(symbol);
        if let Some((_, share)) = kinds.iter_mut().find(|(name, _)| name == kind) {
            *share += percent;
        }
    }
    kinds.retain(|(_, share)| *share > 0.0);
    let mut top: Vec<(String, f64)> = symbols
        .iter()
        .map(|(symbol, percent)| (readable(symbol), *percent))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(TOP_SYMBOLS);
    GuardProfile { kinds, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
    24.71%  [k] bpf_prog_ea79c7c029fe3da1_client_segment
     5.89%  [k] sock_wfree
     5.24%  [k] lookup_nulls_elem_raw
     4.07%  [k] __pi_memcpy
     3.10%  [k] nf_conntrack_in
     2.38%  [k] trie_lookup_elem
     2.00%  [k] tcp_v4_rcv
     1.00%  [.] some_user_function
     0.50%  [k] pv_native_safe_halt
# a comment line perf may print
";

    #[test]
    fn report_lines_become_symbols_and_shares() {
        let symbols = parse_report(REPORT);
        assert_eq!(symbols.len(), 9);
        assert_eq!(
            symbols[0],
            (
                "bpf_prog_ea79c7c029fe3da1_client_segment".to_string(),
                24.71
            )
        );
        assert_eq!(symbols[7], ("some_user_function".to_string(), 1.0));
    }

    #[test]
    fn symbols_sum_into_kinds_of_work() {
        let profile = summarise(&parse_report(REPORT));
        let share = |kind: &str| {
            profile
                .kinds
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, s)| (s * 100.0).round() / 100.0)
        };
        assert_eq!(share("XDP programs"), Some(24.71));
        assert_eq!(share("BPF maps, helpers"), Some(5.24 + 2.38));
        assert_eq!(share("veth, buffers, memory"), Some(5.89 + 4.07));
        assert_eq!(share("netfilter, conntrack"), Some(3.10));
        assert_eq!(share("TCP/IP stack"), Some(2.00));
        assert_eq!(share("idle"), Some(0.50));
        assert_eq!(share("other"), Some(1.00));
        assert_eq!(profile.top[0], ("XDP client_segment".to_string(), 24.71));
        assert_eq!(profile.top.len(), TOP_SYMBOLS);
    }
}
