//! Which guard a verb talks to, and asking it: its controller when one runs, else (for what
//! can be read or changed without one) its pinned maps, said in one line.

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    control::{
        client, pinned,
        protocol::{Reply, Request},
    },
    dataplane::persist,
};

/// The guard a verb is about.
#[derive(clap::Args, Clone)]
pub struct GuardArgs {
    /// The guard's client-side interface (needed only when several guards run).
    #[arg(long, short = 'i', value_name = "IFACE", global = true)]
    pub iface: Option<String>,
    /// Where bpffs is, as `synguard run --bpffs` had it (read when no controller runs).
    #[arg(long, value_name = "PATH", env = "SYNGUARD_BPFFS", default_value = persist::BPFFS,
          global = true)]
    pub bpffs: PathBuf,
}

/// A guard, and how to print what it answers.
#[derive(clap::Args, Clone)]
pub struct ReadArgs {
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Print the answer as JSON, tagged with its kind, as the controller sent it.
    #[arg(long, global = true)]
    pub json: bool,
}

impl GuardArgs {
    /// The interface: the one given, or the only guard attached in this network namespace.
    pub fn iface(&self) -> Result<String> {
        match &self.iface {
            Some(iface) => Ok(iface.clone()),
            None => persist::attached_iface(&self.bpffs),
        }
    }

    /// Asks the guard's controller, or, when none runs, answers from the guard's pins.
    pub fn ask(&self, request: Request) -> Result<Reply> {
        if let Some(stream) = client::connect(self.iface.as_deref())? {
            return client::exchange(stream, &request);
        }
        let iface = self.iface()?;
        let reply = pinned::answer(&iface, &self.bpffs, request)?;
        eprintln!(
            "synguard: no controller runs for {iface}: answered from the guard's pinned maps \
             (rates and the policy's figures need `synguard run`)"
        );
        Ok(reply)
    }
}
