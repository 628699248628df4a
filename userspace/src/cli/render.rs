//! How each reply prints as text (`--json` prints the reply itself).

use anyhow::Result;
use synguard_common::counters::Counter;

use crate::{
    clock::unix_now,
    control::protocol::{Reply, Settings},
    flows::tcp_state::State,
};

fn unexpected(reply: &Reply, wanted: &str) -> anyhow::Error {
    anyhow::anyhow!("expected {wanted} in the answer, got {reply:?}")
}

/// `synguard status` in the manner of `ss -s`.
pub fn status(reply: &Reply) -> Result<String> {
    let Reply::Status(status) = reply else {
        return Err(unexpected(reply, "a status"));
    };
    let flows = &status.flows;
    let count = |name: &str| flows.states.get(name).copied().unwrap_or(0);
    let mut text = format!(
        "Flows: {} (estab {}, synrecv {}, timewait {}, closewait {})\n\
         Half-open: {} (validated, the server has not answered yet)\n",
        flows.total,
        count("ESTAB"),
        count("SYN-RECV"),
        count("TIME-WAIT"),
        count("CLOSE-WAIT"),
        flows.awaiting_server,
    );
    if let Some(filter) = &flows.filter
        && let Some(marked) = filter.marked
    {
        text.push_str(&format!(
            "Flows filter: {marked} of {} slots marked ({:.1} %; {} rebuilds)\n",
            filter.slots,
            100.0 * marked as f64 / f64::from(filter.slots.max(1)),
            filter.rebuilds,
        ));
    }
    text.push('\n');
    text.push_str("State        Flows\n");
    for state in State::ALL {
        text.push_str(&format!("{:<12} {}\n", state.name(), count(state.name())));
    }
    if let Some(counts) = &flows.counts {
        text.push_str("\nEnded flows:");
        for (name, value) in counts {
            text.push_str(&format!(" {name} {value}"));
        }
        text.push('\n');
    }
    let policy = &status.policy;
    text.push_str(
        "\nService                                     Mode     Cookies  SYN/s      SYNs\n",
    );
    for service in &policy.services {
        text.push_str(&format!(
            "{:<43} {:<8} {:<8} {:>6} {:>9}\n",
            service.service,
            service.mode,
            if service.cookies_on { "on" } else { "off" },
            service
                .syn_rate
                .map_or("-".to_string(), |rate| format!("{rate:.0}")),
            service.syns,
        ));
    }
    text.push_str(&format!(
        "\nHalf-open by source: {} in all; blocked prefixes {}, allowed {}\n",
        policy
            .half_open
            .map_or("-".to_string(), |count| format!("{count:.0}")),
        policy.blocks,
        policy.allows
    ));
    text.push_str("Source                                      Half-open  SYN/s  Bad ACK/s\n");
    for source in &policy.top_sources {
        text.push_str(&format!(
            "{:<43} {:>9.0} {:>6.0} {:>10.0}\n",
            source.source, source.half_open, source.syn_rate, source.invalid_ack_rate,
        ));
    }
    Ok(text)
}

/// `synguard flows` as a table.
pub fn flows(reply: &Reply) -> Result<String> {
    let Reply::Flows { flows } = reply else {
        return Err(unexpected(reply, "flows"));
    };
    let mut text = format!(
        "{:<44} {:<44} {:<11} {:>8} {:>8} {:>10} {:>12} {:>10} {:>12}\n",
        "Client",
        "Server",
        "State",
        "Age(s)",
        "Idle(s)",
        "Pkts->srv",
        "Bytes->srv",
        "Pkts->cli",
        "Bytes->cli"
    );
    for flow in flows {
        text.push_str(&format!(
            "{:<44} {:<44} {:<11} {:>8} {:>8.1} {:>10} {:>12} {:>10} {:>12}\n",
            flow.client,
            flow.server,
            flow.state,
            flow.age_s
                .map_or("-".to_string(), |age| format!("{age:.1}")),
            flow.idle_s,
            flow.to_server.packets,
            flow.to_server.bytes,
            flow.to_client.packets,
            flow.to_client.bytes,
        ));
    }
    Ok(text)
}

/// `synguard stats` as a table: the counters that moved, their totals and rates.
pub fn stats(reply: &Reply) -> Result<String> {
    let Reply::Stats(stats) = reply else {
        return Err(unexpected(reply, "counters"));
    };
    let mut text = format!("{:<36} {:>16} {:>14}\n", "counter", "total", "per second");
    for counter in Counter::ALL {
        let name = counter.name();
        let total = stats.total.get(name).copied().unwrap_or(0);
        if total == 0 {
            continue;
        }
        let rate = stats
            .per_second
            .as_ref()
            .and_then(|rates| rates.get(name))
            .map_or("-".to_string(), |rate| format!("{rate:.1}"));
        text.push_str(&format!("{name:<36} {total:>16} {rate:>14}\n"));
    }
    Ok(text)
}

/// `synguard set`: what changed.
pub fn changes(reply: &Reply) -> Result<String> {
    let Reply::Changed { changes } = reply else {
        return Err(unexpected(reply, "the changes"));
    };
    if changes.is_empty() {
        return Ok("nothing changed (the values were already in force)\n".to_string());
    }
    Ok(changes
        .iter()
        .map(|change| {
            format!(
                "{}: {} -> {}\n",
                change.key,
                change.old.join(","),
                change.new.join(",")
            )
        })
        .collect())
}

/// `synguard get`: every setting (or only `key`'s value), its source and whether it is live.
pub fn settings(settings: &Settings, key: Option<&str>) -> String {
    let mut text = String::new();
    if key.is_none() {
        text.push_str(&format!(
            "configuration file: {}\n",
            settings
                .config
                .as_ref()
                .map_or("(none)".to_string(), |path| path.display().to_string())
        ));
        text.push_str(&format!(
            "{:<24} {:<32} {:<8} LIVE\n",
            "KEY", "VALUE", "SOURCE"
        ));
    }
    for (name, setting) in &settings.settings {
        if key.is_some_and(|key| key != name) {
            continue;
        }
        let value = setting.value.join(",");
        if key.is_some() {
            text.push_str(&format!("{value}\n"));
            continue;
        }
        let source = serde_json::to_value(setting.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let live = if settings.live.contains(name) {
            "yes"
        } else {
            "restart"
        };
        text.push_str(&format!("{name:<24} {value:<32} {source:<8} {live}\n"));
    }
    text
}

pub fn blocks(reply: &Reply) -> Result<String> {
    let Reply::Blocks { blocks } = reply else {
        return Err(unexpected(reply, "the blocks"));
    };
    let mut text = format!(
        "{:<44} {:<18} {:>12} {:>12}\n",
        "Prefix", "Reason", "Measured", "Expires(s)"
    );
    let now = unix_now();
    for block in blocks {
        let expires = block
            .until
            .map_or("never".to_string(), |until| format!("{:.0}", until - now));
        text.push_str(&format!(
            "{:<44} {:<18} {:>12.0} {:>12}\n",
            block.prefix.to_string(),
            block.reason.name(),
            block.measured,
            expires
        ));
    }
    Ok(text)
}

pub fn allows(reply: &Reply) -> Result<String> {
    let Reply::Allows { allows } = reply else {
        return Err(unexpected(reply, "the allows"));
    };
    let mut text = format!("{:<44} Cookie challenge\n", "Prefix");
    for allow in allows {
        text.push_str(&format!(
            "{:<44} {}\n",
            allow.prefix.to_string(),
            if allow.bypass {
                "skipped"
            } else {
                "as the service"
            }
        ));
    }
    Ok(text)
}

pub fn services(reply: &Reply) -> Result<String> {
    let Reply::Services { services } = reply else {
        return Err(unexpected(reply, "the services"));
    };
    let mut text = format!("{:<4} {:<44} {:<8} Cookies\n", "Slot", "Service", "Mode");
    for service in services {
        text.push_str(&format!(
            "{:<4} {:<44} {:<8} {}\n",
            service.slot,
            service.service,
            service.mode,
            if service.cookies_on { "on" } else { "off" }
        ));
    }
    Ok(text)
}
