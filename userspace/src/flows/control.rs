//! The flow table at work: data-plane events in, commands carried out (segments sent, entries
//! removed from the flows map), and the answers `synguard flows` and `synguard status` print.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, MapError};
use log::{debug, warn};
use synguard_common::{
    cookie::FlowKey,
    flow_filter::FLOW_FILTER_SLOTS,
    maps::{FlowEntry, ForgottenFlow},
};

use crate::{
    clock::monotonic_coarse_ns,
    control::protocol::{FilterStatus, FlowRow, FlowStatus},
    flows::{
        events::{self, Event, Record},
        filter::FlowFilter,
        inject::Injector,
        table::{Command, FlowTable, FlowTimers},
        tcp_state::State,
    },
};

pub struct FlowControl {
    pub table: FlowTable,
    map: HashMap<MapData, FlowKey, FlowEntry>,
    /// Flows let go of while their ends may hold them (`maps::ForgottenFlow`).
    forgotten: HashMap<MapData, FlowKey, ForgottenFlow>,
    filter: FlowFilter,
    /// When the filter was last checked for stale marks.
    filter_checked: Instant,
    /// When the forgotten flows were last swept for old ones.
    forgotten_swept: Instant,
    injector: Injector,
}

/// How often the flows filter is checked for stale marks (a check counts 128 KiB of marks).
const FILTER_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often forgotten flows older than ESTABLISHED's idle timeout are let go of for good
/// (a sweep reads the whole map).
const FORGOTTEN_SWEEP_EVERY: Duration = Duration::from_secs(60);

impl FlowControl {
    /// `map` is the flows map, `forgotten` the forgotten flows'; the filter in front of them
    /// is rebuilt from both at once (a restarted controller may find marks of flows long
    /// gone). A rebuild that fails only leaves those marks: the filter the data plane keeps
    /// never misses a flow.
    pub fn new(
        map: aya::maps::Map,
        forgotten: aya::maps::Map,
        filter: FlowFilter,
        timers: FlowTimers,
    ) -> Result<Self> {
        let mut control = Self {
            table: FlowTable::new(timers),
            map: HashMap::try_from(map).context("the flows map")?,
            forgotten: HashMap::try_from(forgotten).context("the forgotten flows map")?,
            filter,
            filter_checked: Instant::now(),
            forgotten_swept: Instant::now(),
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
            .rebuild(&self.map, &self.forgotten)
            .context("rebuilding the flows filter")?;
        debug!("flows filter rebuilt: {marked} slots marked");
        Ok(marked)
    }

    /// One ring-buffer record; returns it when it is a flow event.
    pub fn on_record(&mut self, record: &[u8]) -> Option<Event> {
        let Some(decoded) = events::decode(record) else {
            // A build mismatch between data plane and controller, never a client's doing.
            self.table.counts.malformed_records += 1;
            warn!(
                "a flow event record of {} bytes with tag {:?} was not understood",
                record.len(),
                record.first()
            );
            return None;
        };
        let event = match decoded {
            Record::Event(event) => event,
            Record::EarlyData(data) => {
                debug!("early data seq {} len {}", data.seq, data.len);
                let commands = self.table.on_early_data(&data);
                self.carry_out(&commands);
                return None;
            }
        };
        debug!(
            "event kind {:?} dir {:?} flags {:#04x} seq {} ack {} len {}",
            event.kind,
            event.direction,
            event.wire.flags,
            event.wire.seq,
            event.wire.ack,
            event.wire.payload_len
        );
        let commands = self.table.on_event(&event, monotonic_coarse_ns());
        debug!(
            "state {:?}, commands {commands:?}",
            self.table.get(&event.wire.flow).map(|f| f.server.state)
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
        if self.forgotten_swept.elapsed() >= FORGOTTEN_SWEEP_EVERY {
            self.forgotten_swept = Instant::now();
            self.sweep_forgotten();
        }
    }

    /// Lets go for good of the forgotten flows older than ESTABLISHED's idle timeout: by
    /// then the flow would have idled out anyway (their filter marks go at the next rebuild).
    fn sweep_forgotten(&mut self) {
        let limit = self.table.timers.idle_ns[State::Established as usize];
        if limit == 0 {
            return;
        }
        let now = monotonic_coarse_ns();
        let old: Vec<FlowKey> = self
            .forgotten
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, forgotten)| now.saturating_sub(forgotten.forgotten_ns) >= limit)
            .map(|(key, _)| key)
            .collect();
        for key in old {
            self.clear_forgotten(&key);
        }
    }

    fn clear_forgotten(&mut self, flow: &FlowKey) {
        if let Err(error) = self.forgotten.remove(flow)
            && !matches!(error, MapError::KeyNotFound)
        {
            warn!("removing a forgotten flow from the data plane: {error}");
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
                Command::RememberForgotten {
                    flow,
                    seq_offset,
                    forgotten_ns,
                } => {
                    // Marked first: the filter must never hide an entry the data plane holds.
                    self.filter.mark(flow);
                    let forgotten = ForgottenFlow {
                        seq_offset: *seq_offset,
                        _pad: 0,
                        forgotten_ns: *forgotten_ns,
                    };
                    if let Err(error) = self.forgotten.insert(flow, forgotten, 0) {
                        warn!("remembering a forgotten flow in the data plane: {error}");
                    }
                }
                Command::ClearForgotten { flow } => self.clear_forgotten(flow),
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

    /// `synguard flows`.
    pub fn rows(&self) -> Vec<FlowRow> {
        self.table.rows(
            |key| self.map.get(key, 0).unwrap_or_default(),
            monotonic_coarse_ns(),
        )
    }

    /// `synguard status`: the state histogram, the counts and the filter.
    pub fn status(&self) -> FlowStatus {
        FlowStatus {
            counts: Some(self.table.counts.named().into_iter().collect()),
            filter: Some(FilterStatus {
                slots: FLOW_FILTER_SLOTS as u32,
                marked: self.filter.marked().ok(),
                rebuilds: self.filter.rebuilds,
            }),
            ..self.table.status()
        }
    }
}
