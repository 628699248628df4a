//! The controller's side of the filter in front of the flows map
//! (`synguard_common::flow_filter`): it maps the filter's two halves into memory and, when
//! marks of gone flows pile up, rebuilds the half the data plane does not read from the flows
//! map's keys and makes it the one read.

use std::{
    borrow::Borrow,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU8, Ordering, fence},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, Map, MapData, MapError},
};
use synguard_common::{
    cookie::FlowKey,
    flow_filter::{FLOW_FILTER_SLOTS, flow_filter_slot},
    maps::{FLOW_FILTER_ACTIVE_MAP, FLOW_FILTER_MAP, FlowEntry, ForgottenFlow},
};

/// The rebuild, as steps over the two halves the data plane shares (atomics: it stores into
/// them meanwhile):
/// 1. [`Rebuild::clear_inactive`]: zero the half the data plane does not read. A mark the
///    data plane stores into it meanwhile may be lost.
/// 2. Wait until every data-plane run under way has ended ([`grace_period`]). A run that
///    marked a slot before or during step 1 has then inserted its flow too, so step 3 finds
///    it; a run that marks after step 1 keeps its mark.
/// 3. [`Rebuild::mark_live`] for every key in the flows map.
/// 4. [`Rebuild::activate`]: the caller makes the data plane read the rebuilt half.
struct Rebuild<'a> {
    halves: [&'a [AtomicU8]; 2],
    active: usize,
}

impl<'a> Rebuild<'a> {
    /// `halves` of [`FLOW_FILTER_SLOTS`] slots each; `active` is the half the data plane
    /// reads now (0 or 1).
    fn new(halves: [&'a [AtomicU8]; 2], active: u32) -> Self {
        assert!(halves.iter().all(|half| half.len() == FLOW_FILTER_SLOTS));
        Self {
            halves,
            active: (active & 1) as usize,
        }
    }

    fn clear_inactive(&mut self) {
        for slot in self.halves[1 - self.active] {
            slot.store(0, Ordering::Relaxed);
        }
    }

    fn mark_live(&mut self, flow: &FlowKey) {
        self.halves[1 - self.active][flow_filter_slot(flow)].store(1, Ordering::Relaxed);
    }

    /// The half to make active, and how many of its slots are marked.
    fn activate(self) -> (u32, usize) {
        let rebuilt = 1 - self.active;
        // The marks land before the data plane is told to read them.
        fence(Ordering::Release);
        (rebuilt as u32, marked(self.halves[rebuilt]))
    }
}

/// Steps 3 and 4 of a [`Rebuild`]: marks every key, then names the half to activate; an
/// error (a key unread, or more than `most` of them) means the half must not be used.
fn mark_all(
    mut rebuild: Rebuild,
    keys: impl Iterator<Item = Result<FlowKey, MapError>>,
    most: usize,
) -> Result<(u32, usize)> {
    for (read, key) in keys.enumerate() {
        if read == most {
            bail!("the flows map changed faster than it could be read ({most} keys)");
        }
        rebuild.mark_live(&key.context("reading the flows map's keys")?);
    }
    Ok(rebuild.activate())
}

/// How many slots of a half are marked.
fn marked(half: &[AtomicU8]) -> usize {
    half.iter()
        .filter(|slot| slot.load(Ordering::Relaxed) != 0)
        .count()
}

/// Returns once every BPF program run under way on any CPU has ended: XDP runs inside an RCU
/// read-side section, and `MEMBARRIER_CMD_GLOBAL` waits for an RCU grace period
/// (`synchronize_rcu`).
fn grace_period() -> Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: a syscall with plain integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        bail!(
            "membarrier(MEMBARRIER_CMD_GLOBAL): {} (a kernel built without CONFIG_MEMBARRIER)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The two halves, memory-mapped from the filter map (`BPF_F_MMAPABLE`).
struct SharedHalves {
    base: NonNull<AtomicU8>,
    len: usize,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomics.
unsafe impl Send for SharedHalves {}

impl SharedHalves {
    fn map(map: MapData) -> Result<Self> {
        let len = 2 * FLOW_FILTER_SLOTS;
        // SAFETY: maps a BPF array's values (the kernel checks the length and the flag); the
        // mapping lives until `drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            bail!(
                "memory-mapping the flows filter: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self {
            base: NonNull::new(base.cast()).context("mmap returned null")?,
            len,
            _map: map,
        })
    }

    fn halves(&self) -> [&[AtomicU8]; 2] {
        // SAFETY: `len` bytes are mapped for as long as `self` lives; AtomicU8 has u8's layout.
        let all = unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) };
        let (zero, one) = all.split_at(FLOW_FILTER_SLOTS);
        [zero, one]
    }
}

impl Drop for SharedHalves {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The filter as the controller holds it.
pub struct FlowFilter {
    shared: SharedHalves,
    active: Array<MapData, u32>,
    /// Slots marked right after the last rebuild: the live flows' share.
    marked_after_rebuild: usize,
    /// Rebuilds done by this controller.
    pub rebuilds: u64,
}

impl FlowFilter {
    /// Takes the filter's maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        };
        let Map::Array(filter) = take(FLOW_FILTER_MAP)? else {
            bail!("map {FLOW_FILTER_MAP} is not an array");
        };
        let active = Array::try_from(take(FLOW_FILTER_ACTIVE_MAP)?)?;
        Ok(Self {
            shared: SharedHalves::map(filter)?,
            active,
            marked_after_rebuild: 0,
            rebuilds: 0,
        })
    }

    /// Rebuilds the filter from the keys of `flows`, the flows map, and of `forgotten`, the
    /// flows the data plane must still recognize (see [`Rebuild`]); returns how many slots the
    /// rebuilt half has marked. The data plane is switched to the rebuilt half only when every
    /// key was read: a read error, or more keys than twice the maps' sizes (a map churning
    /// faster than it is read makes the kernel restart the walk), leaves the filter as it was.
    pub fn rebuild<T: Borrow<MapData>, U: Borrow<MapData>>(
        &mut self,
        flows: &HashMap<T, FlowKey, FlowEntry>,
        forgotten: &HashMap<U, FlowKey, ForgottenFlow>,
    ) -> Result<usize> {
        let most = 2
            * (flows.map().info()?.max_entries() + forgotten.map().info()?.max_entries()) as usize;
        let keys = flows.keys().chain(forgotten.keys());
        let active = self
            .active
            .get(&0, 0)
            .context("reading the active filter half")?;
        let mut rebuild = Rebuild::new(self.shared.halves(), active);
        rebuild.clear_inactive();
        grace_period()?;
        let (rebuilt, marked) = mark_all(rebuild, keys, most)?;
        self.active
            .set(0, rebuilt, 0)
            .context("switching the filter half")?;
        self.marked_after_rebuild = marked;
        self.rebuilds += 1;
        Ok(marked)
    }

    /// Marks `flow` in both halves, as the data plane marks a flow it inserts: the filter
    /// then lets its segments through to the lookups.
    pub fn mark(&self, flow: &FlowKey) {
        let slot = flow_filter_slot(flow);
        for half in self.shared.halves() {
            half[slot].store(1, Ordering::Relaxed);
        }
        // The marks land before the caller writes the entry they stand for.
        fence(Ordering::Release);
    }

    /// Slots marked in the half the data plane reads.
    pub fn marked(&self) -> Result<usize> {
        let active = self
            .active
            .get(&0, 0)
            .context("reading the active filter half")?;
        Ok(marked(self.shared.halves()[(active & 1) as usize]))
    }

    /// Worth a rebuild: the half being read has over twice the marks of the last rebuild,
    /// and over 1/16 of its slots (below that, nearly every flood segment skips the lookup
    /// anyway, and a rebuild walks the whole flows map).
    pub fn stale(&self) -> Result<bool> {
        let now = self.marked()?;
        Ok(now > FLOW_FILTER_SLOTS / 16 && now > 2 * self.marked_after_rebuild)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn flow(client: [u8; 4], client_port: u16) -> FlowKey {
        FlowKey::v4(client, client_port, [198, 19, 1, 2], 80)
    }

    fn half() -> Vec<AtomicU8> {
        (0..FLOW_FILTER_SLOTS).map(|_| AtomicU8::new(0)).collect()
    }

    /// The rebuild keeps the live flows, drops the gone ones' marks, and never touches the
    /// half the data plane reads.
    #[test]
    fn a_rebuild_keeps_live_flows_and_drops_stale_marks() {
        let (zero, one) = (half(), half());
        let live: Vec<FlowKey> = (0..100)
            .map(|p| flow([198, 18, 0, 2], 40_000 + p))
            .collect();
        let gone: Vec<FlowKey> = (0..100)
            .map(|p| flow([198, 18, 0, 3], 40_000 + p))
            .collect();
        // The data plane marked all of them in both halves; half 0 is read.
        for key in live.iter().chain(&gone) {
            zero[flow_filter_slot(key)].store(1, Ordering::Relaxed);
            one[flow_filter_slot(key)].store(1, Ordering::Relaxed);
        }
        let marked_before = marked(&zero);
        let mut rebuild = Rebuild::new([&zero, &one], 0);
        rebuild.clear_inactive();
        for key in &live {
            rebuild.mark_live(key);
        }
        let (active, marked_slots) = rebuild.activate();
        assert_eq!(active, 1);
        let live_slots: BTreeSet<usize> = live.iter().map(flow_filter_slot).collect();
        assert_eq!(
            marked_slots,
            live_slots.len(),
            "live flows' slots, no others"
        );
        assert_eq!(
            marked(&zero),
            marked_before,
            "the half being read is left alone"
        );
        let held = |key: &FlowKey| one[flow_filter_slot(key)].load(Ordering::Relaxed) != 0;
        assert!(live.iter().all(held));
        let kept = gone.iter().filter(|key| held(key)).count();
        let shared = gone
            .iter()
            .filter(|key| live_slots.contains(&flow_filter_slot(key)))
            .count();
        assert_eq!(
            kept, shared,
            "gone flows' marks are dropped (but on shared slots)"
        );
        // The next rebuild goes the other way.
        assert_eq!(Rebuild::new([&zero, &one], active).activate().0, 0);
    }

    /// A walk of the flows map that fails or does not end yields no half to activate: one
    /// missing key would make its flow's segments look like no flow's.
    #[test]
    fn an_incomplete_walk_of_the_flows_map_activates_nothing() {
        let (zero, one) = (half(), half());
        let keys = || (0..10).map(|p| Ok(flow([198, 18, 0, 2], 40_000 + p)));
        let walk = |keys: Vec<Result<FlowKey, MapError>>, most| {
            mark_all(Rebuild::new([&zero, &one], 0), keys.into_iter(), most)
        };
        assert_eq!(walk(keys().collect(), 10).unwrap().0, 1, "all 10 read");
        assert!(walk(keys().collect(), 9).is_err(), "more than the most");
        let mut failing: Vec<_> = keys().collect();
        failing.insert(5, Err(MapError::KeyNotFound));
        assert!(walk(failing, 100).is_err(), "a read error");
    }

    #[test]
    fn the_grace_period_is_available_here() {
        grace_period().expect("membarrier");
    }
}
