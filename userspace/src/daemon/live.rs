//! What a running guard can change while it runs: `synguard set`, SIGHUP's reload, and the
//! parts of the guard they reach. Everything is checked first: one bad value changes nothing.

use anyhow::Result;
use log::{info, warn};

use crate::{
    clock::cookie_counter_now,
    config::{
        file::Config,
        run_args::{RunArgs, live_keys},
        service::{ProtectedService, service_slots},
        setting::Setting,
    },
    control::protocol::Change,
    dataplane::{
        keys::KeySchedule,
        maps,
        persist::{Pins, ROTATIONS_FILE},
    },
    flows::control::FlowControl,
    policy::control::PolicyControl,
};

/// What a running guard can change: its settings and the parts that apply them.
pub struct Live<'a> {
    /// `synguard detach` asked the controller to detach and exit.
    pub detach: bool,
    pub keys: &'a mut KeySchedule,
    pub pins: &'a Pins,
    pub args: &'a mut RunArgs,
    pub config: &'a mut Config,
    pub flows: &'a mut FlowControl,
    pub policy: &'a mut PolicyControl,
    pub ebpf: &'a mut aya::Ebpf,
}

pub fn describe_changes(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no setting changed".to_string();
    }
    changes
        .iter()
        .map(|c| format!("{} {} -> {}", c.key, c.old.join(","), c.new.join(",")))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Live<'_> {
    /// `synguard keys rotate`: the next epoch's keys now, the current one still accepted;
    /// returns the new epoch. The rotation is saved: a restarted controller keeps it.
    pub fn rotate_keys(&mut self) -> Result<u64> {
        let epoch = self
            .keys
            .rotate(self.ebpf, self.args.live.cookie_rotation)?;
        self.pins
            .write(ROTATIONS_FILE, self.keys.extra.to_string().as_bytes())?;
        info!("cookie keys rotated by hand (epoch {epoch}); the previous key stays valid");
        Ok(epoch)
    }

    /// `synguard set`: every key must be live and every value valid, or nothing changes.
    pub fn set(&mut self, settings: &[(String, String)]) -> Result<Vec<Change>> {
        let live = live_keys();
        for (key, _) in settings {
            if !self.config.effective.contains_key(key) {
                anyhow::bail!(
                    "unknown key {key:?}: the keys are synguard run's long flags (`synguard get` lists them)"
                );
            }
            if !live.contains(key) {
                anyhow::bail!(
                    "{key} cannot change while synguard runs: restart it (lists change with `synguard block|allow`)"
                );
            }
        }
        let before = self.config.effective.clone();
        let new = self.config.set(settings)?;
        self.apply(&new, &before)
    }

    /// The services become `wanted`: the ones gone are released, the new ones (and those whose
    /// mode changed) protected; checked as a whole first, so a clash changes nothing.
    fn reprotect(&mut self, wanted: &[ProtectedService]) -> Result<()> {
        service_slots(wanted)?;
        let name = crate::config::service::service_name;
        for old in &self.args.start.protect {
            if !wanted.iter().any(|w| name(w) == name(old)) {
                self.policy.unprotect(old)?;
            }
        }
        for service in wanted {
            if !self.args.start.protect.contains(service) {
                self.policy.protect(service.clone())?;
            }
        }
        self.args.start.protect = wanted.to_vec();
        Ok(())
    }

    /// SIGHUP: the file again; settings that cannot change live wait for a restart.
    pub fn reload(&mut self) -> Result<Vec<Change>> {
        let (before, saved) = (self.config.effective.clone(), self.config.clone());
        let new = self.config.reload()?;
        self.apply(&new, &before)
            .inspect_err(|_| *self.config = saved)
    }

    fn apply(
        &mut self,
        new: &RunArgs,
        before: &std::collections::BTreeMap<String, Setting>,
    ) -> Result<Vec<Change>> {
        let live = live_keys();
        let mut changes = Vec::new();
        for (key, setting) in &self.config.effective {
            let old = before.get(key).map(|s| s.value.clone()).unwrap_or_default();
            if old == setting.value {
                continue;
            }
            // The services change live too (on reload; `synguard protect` does it by hand).
            if live.contains(key) || key == "protect" {
                changes.push(Change {
                    key: key.clone(),
                    old,
                    new: setting.value.clone(),
                });
            } else {
                warn!("{key} changed in the configuration: it takes effect when synguard restarts");
            }
        }
        if self.args.start.protect != new.start.protect {
            self.reprotect(&new.start.protect)?;
        }
        self.args.live = new.live.clone();
        let args = &*self.args;
        log::set_max_level(args.live.log_level);
        self.flows.table.timers = args.live.timers();
        self.flows.table.early_data_window = args.live.early_data.into();
        maps::write_settings(
            self.ebpf,
            &args.live.syn_ack_settings(),
            cookie_counter_now(),
        )?;
        maps::write_policy_settings(self.ebpf, &args.live.policy.data_plane_settings())?;
        self.policy.policy.limits = args.live.policy.limits();
        self.policy.policy.rules = args.live.policy.rules();
        self.policy
            .set_auto(args.live.policy.auto_syn_rate, args.live.policy.auto_hold)?;
        self.policy.set_exports(args.live.policy.exports()?);
        for change in &changes {
            info!(
                "set {}: {} -> {}",
                change.key,
                change.old.join(","),
                change.new.join(",")
            );
        }
        Ok(changes)
    }
}
