//! The flow table at work: data-plane events in, commands carried out (segments sent, entries
//! removed from the flows map), and the answers `synguard flows` and `synguard status` print.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, MapError};
use log::{debug, warn};
use serde_json::{Value, json};
use synguard_common::{
    cookie::FlowKey,
    flow_filter::FLOW_FILTER_SLOTS,
    maps::{FlowDirection, FlowEntry},
};

use crate::{
    clock::monotonic_coarse_ns,
    flows::events::{self, Record, client, server},
    flows::filter::FlowFilter,
    flows::inject::Injector,
    flows::table::{Command, FlowTable, FlowTimers},
    flows::tcp_state::State,
};

pub struct FlowControl {
    pub table: FlowTable,
    map: HashMap<MapData, FlowKey, FlowEntry>,
    filter: FlowFilter,
    /// When the filter was last checked for stale marks.
    filter_checked: Instant,
    injector: Injector,
}

/// How often the flows filter is checked for stale marks (a check counts 128 KiB of marks).
const FILTER_CHECK_EVERY: Duration = Duration::from_secs(1);

impl FlowControl {
    /// `map` is the flows map; the filter in front of it is rebuilt from it at once (a
    /// restarted controller may find marks of flows long gone). A rebuild that fails only
    /// leaves those marks: the filter the data plane keeps never misses a flow.
    pub fn new(map: aya::maps::Map, filter: FlowFilter, timers: FlowTimers) -> Result<Self> {
        let mut control = Self {
            table: FlowTable::new(timers),
            map: HashMap::try_from(map).context("the flows map")?,
            filter,
            filter_checked: Instant::now(),
            injector: Injector::new()?,
        };
        if let Err(error) = control.rebuild_filter() {
            warn!("{error:#}");
        }
        Ok(control)
    }

    /// Rebuilds the flows filter from the flows map; returns the slots marked.
    fn rebuild_filter(&mut self) -> Result<usize> {
        let marked = self
            .filter
            .rebuild(&self.map)
            .context("rebuilding the flows filter")?;
        debug!("flows filter rebuilt: {marked} slots marked");
        Ok(marked)
    }

    /// One ring-buffer record; returns it when it is a flow event.
    pub fn on_record(&mut self, record: &[u8]) -> Option<synguard_common::maps::FlowEvent> {
        let event = match events::decode(record)? {
            Record::Event(event) => event,
            Record::EarlyData(data) => {
                debug!("early data seq {} len {}", data.seq, data.len);
                let commands = self.table.on_early_data(&data);
                self.carry_out(&commands);
                return None;
            }
        };
        debug!(
            "event kind {} dir {} flags {:#04x} seq {} ack {} len {}",
            event.kind, event.direction, event.flags, event.seq, event.ack, event.payload_len
        );
        let commands = self.table.on_event(&event, monotonic_coarse_ns());
        debug!(
            "state {:?}, commands {commands:?}",
            self.table.get(&event.flow).map(|f| f.server.state)
        );
        self.carry_out(&commands);
        Some(event)
    }

    /// Takes over every flow in the data plane's map (a restarted controller); returns how many.
    pub fn adopt_all(&mut self) -> usize {
        let now = monotonic_coarse_ns();
        let entries: Vec<(FlowKey, FlowEntry)> = self.map.iter().filter_map(Result::ok).collect();
        for (key, entry) in &entries {
            self.table.adopt(*key, entry, now);
        }
        entries.len()
    }

    pub fn on_tick(&mut self) {
        let map = &self.map;
        let commands = self
            .table
            .on_tick(monotonic_coarse_ns(), |key| map.get(key, 0).ok());
        self.carry_out(&commands);
        if self.filter_checked.elapsed() >= FILTER_CHECK_EVERY {
            self.filter_checked = Instant::now();
            // A failed rebuild leaves the filter as it was: correct, only less selective.
            let checked = match self.filter.stale() {
                Ok(true) => self.rebuild_filter().map(drop),
                Ok(false) => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = checked {
                warn!("{error:#}");
            }
        }
    }

    fn carry_out(&mut self, commands: &[Command]) {
        for command in commands {
            match command {
                Command::Remove { flow, guard_isn } => {
                    // Only this connection's entry: a new one may already use the tuple.
                    if self
                        .map
                        .get(flow, 0)
                        .is_ok_and(|e| e.guard_isn == *guard_isn)
                        && let Err(error) = self.map.remove(flow)
                        && !matches!(error, MapError::KeyNotFound)
                    {
                        warn!("removing a closed flow from the data plane: {error}");
                    }
                }
                Command::AckServer { flow, payload, .. }
                    if payload.is_empty()
                        && self.map.get(flow, 0).is_ok_and(|e| e.to_server.packets > 0) =>
                {
                    // The client's own segments already completed the server's handshake.
                    // Sent late, our ACK could reach a server whose connection is already
                    // over (its TIME-WAIT answers, and the client resets): leave it out.
                    self.table.counts.server_acks_skipped += 1;
                }
                other => {
                    if let Err(error) = self.injector.send(other) {
                        warn!("{error:#}");
                    }
                }
            }
        }
    }

    /// `synguard flows`: every flow with its state, age and traffic each way.
    pub fn flows_json(&self) -> Value {
        let now = monotonic_coarse_ns();
        let direction = |d: &FlowDirection| json!({"packets": d.packets, "bytes": d.bytes});
        let flows: Vec<Value> = self
            .table
            .iter()
            .map(|(key, flow)| {
                let entry = self.map.get(key, 0).unwrap_or_default();
                json!({
                    "client": client(key).to_string(),
                    "server": server(key).to_string(),
                    "state": flow.server.state.name(),
                    "joined": flow.joined,
                    "age_s": now.saturating_sub(flow.validated_ns) as f64 / 1e9,
                    "to_server": direction(&entry.to_server),
                    "to_client": direction(&entry.to_client),
                })
            })
            .collect();
        json!({ "flows": flows })
    }

    /// `synguard status`: the state histogram and the half-open count.
    pub fn status_json(&self) -> Value {
        let states: serde_json::Map<String, Value> = self
            .table
            .histogram()
            .iter()
            .map(|(state, count)| (state.name().to_string(), json!(count)))
            .collect();
        json!({
            "flows": self.table.len(),
            "states": states,
            "awaiting_server": self.table.awaiting_server(),
            "counts": self.table.counts,
            "flows_filter": {
                "slots": FLOW_FILTER_SLOTS,
                "marked": self.filter.marked().ok(),
                "rebuilds": self.filter.rebuilds,
            },
        })
    }
}

/// `synguard status` in the manner of `ss -s`.
pub fn status_text(status: &Value) -> String {
    let count = |name: &str| status["states"][name].as_u64().unwrap_or(0);
    let mut text = format!(
        "Flows: {} (estab {}, synrecv {}, timewait {}, closewait {})\n\
         Half-open: {} (validated, the server has not answered yet)\n",
        status["flows"],
        count("ESTAB"),
        count("SYN-RECV"),
        count("TIME-WAIT"),
        count("CLOSE-WAIT"),
        status["awaiting_server"],
    );
    let filter = &status["flows_filter"];
    if let (Some(marked), Some(slots)) = (filter["marked"].as_u64(), filter["slots"].as_u64()) {
        text.push_str(&format!(
            "Flows filter: {marked} of {slots} slots marked ({:.1} %; {} rebuilds)\n",
            100.0 * marked as f64 / slots.max(1) as f64,
            filter["rebuilds"],
        ));
    }
    text.push('\n');
    text.push_str("State        Flows\n");
    for state in State::ALL {
        text.push_str(&format!("{:<12} {}\n", state.name(), count(state.name())));
    }
    text.push_str("\nEnded flows:");
    if let Some(counts) = status["counts"].as_object() {
        for (name, value) in counts {
            text.push_str(&format!(" {name} {value}"));
        }
    }
    let policy = &status["policy"];
    if policy.is_object() {
        text.push_str(
            "\n\nService                                     Mode     Cookies  SYN/s      SYNs\n",
        );
        for service in policy["services"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "{:<43} {:<8} {:<8} {:>6.0} {:>9}\n",
                service["service"].as_str().unwrap_or(""),
                service["mode"].as_str().unwrap_or(""),
                if service["cookies_on"].as_bool().unwrap_or(false) {
                    "on"
                } else {
                    "off"
                },
                service["syn_rate"].as_f64().unwrap_or(0.0),
                service["syns"],
            ));
        }
        text.push_str(&format!(
            "\nHalf-open by source: {:.0} in all; blocked prefixes {}, allowed {}\n",
            policy["half_open"].as_f64().unwrap_or(0.0),
            policy["blocks"],
            policy["allows"]
        ));
        text.push_str("Source                                      Half-open  SYN/s  Bad ACK/s\n");
        for source in policy["top_sources"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "{:<43} {:>9.0} {:>6.0} {:>10.0}\n",
                source["source"].as_str().unwrap_or(""),
                source["half_open"].as_f64().unwrap_or(0.0),
                source["syn_rate"].as_f64().unwrap_or(0.0),
                source["invalid_ack_rate"].as_f64().unwrap_or(0.0),
            ));
        }
    }
    text
}

/// `synguard flows` as a table.
pub fn flows_text(flows: &Value) -> String {
    let mut text = format!(
        "{:<44} {:<44} {:<11} {:>8} {:>10} {:>12} {:>10} {:>12}\n",
        "Client", "Server", "State", "Age(s)", "Pkts->srv", "Bytes->srv", "Pkts->cli", "Bytes->cli"
    );
    for flow in flows["flows"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "{:<44} {:<44} {:<11} {:>8.1} {:>10} {:>12} {:>10} {:>12}\n",
            flow["client"].as_str().unwrap_or(""),
            flow["server"].as_str().unwrap_or(""),
            flow["state"].as_str().unwrap_or(""),
            flow["age_s"].as_f64().unwrap_or(0.0),
            flow["to_server"]["packets"],
            flow["to_server"]["bytes"],
            flow["to_client"]["packets"],
            flow["to_client"]["bytes"],
        ));
    }
    text
}
