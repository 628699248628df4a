//! Decisions leave the box in three forms: JSON lines (stdout or a file), and ExaBGP API lines
//! that announce a blackhole route or a FlowSpec rule for each block (and withdraw it when the
//! block ends), so the routers upstream can drop what this box cannot. The Prometheus side is
//! in `metrics`.

use std::{
    fs::OpenOptions,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::policy::engine::{Decision, Outcome};

/// A decision as one JSON object: `"type": "decision"` (as synguard's other JSON lines say
/// what they are), then the record's fields.
pub fn decision_json(decision: &Decision) -> Value {
    let mut record = json!({ "type": "decision" });
    if let (Value::Object(record), Ok(Value::Object(fields))) =
        (&mut record, serde_json::to_value(decision))
    {
        record.extend(fields);
    }
    record
}

/// Where decisions go besides the controller's log.
#[derive(Clone, Debug, Default)]
pub struct Exports {
    /// JSON lines, one per decision.
    pub decision_log: Option<LineSink>,
    /// ExaBGP API lines.
    pub exabgp: Option<(LineSink, ExabgpStyle)>,
}

/// Where lines go: stdout (`-`) or a file appended to. The file is opened anew for every
/// batch, so a log rotated away (renamed) is followed by a fresh file, not written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineSink {
    Stdout,
    File(PathBuf),
}

impl FromStr for LineSink {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "" => bail!("an empty path: give a file path, or - for stdout"),
            "-" => Ok(LineSink::Stdout),
            path => Ok(LineSink::File(PathBuf::from(path))),
        }
    }
}

impl LineSink {
    /// Checks at startup that the file can be appended to, so a typo fails before anything
    /// is attached (and not at the first block, mid-attack).
    pub fn check(&self) -> Result<()> {
        if let LineSink::File(path) = self {
            open_append(path)?;
        }
        Ok(())
    }

    pub fn write_lines(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        match self {
            LineSink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            LineSink::File(path) => {
                // One write of whole lines: O_APPEND keeps concurrent readers' lines whole.
                open_append(path)?
                    .write_all(text.as_bytes())
                    .with_context(|| format!("appending to {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Opens for appending without blocking: a FIFO nobody reads (ExaBGP not running) is an
/// error at once rather than a controller stuck in open(2).
fn open_append(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => anyhow!(
                "nobody reads the pipe {}: start its reader (ExaBGP's process) first",
                path.display()
            ),
            _ => anyhow!("opening {} for appending: {e}", path.display()),
        })
}

/// What the ExaBGP hook announces for a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExabgpStyle {
    /// A route to the blocked prefix with the BLACKHOLE community (RFC 7999) and this next hop
    /// (`self`: ExaBGP's own address).
    Blackhole { next_hop: Option<IpAddr> },
    /// A FlowSpec rule (RFC 8955/8956) discarding everything from the prefix.
    Flowspec,
}

impl FromStr for ExabgpStyle {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "blackhole" => Ok(ExabgpStyle::Blackhole { next_hop: None }),
            "flowspec" => Ok(ExabgpStyle::Flowspec),
            _ => match text.strip_prefix("blackhole=") {
                Some(hop) => Ok(ExabgpStyle::Blackhole {
                    next_hop: Some(hop.parse().map_err(|_| {
                        anyhow!("{hop:?} is not an IP address for the blackhole next hop")
                    })?),
                }),
                None => Err(anyhow!(
                    "{text:?} is not an ExaBGP style: blackhole, blackhole=NEXT_HOP or flowspec"
                )),
            },
        }
    }
}

/// The BLACKHOLE well-known community (RFC 7999).
pub const BLACKHOLE_COMMUNITY: &str = "65535:666";

/// The ExaBGP API line of a decision: blocks announce, unblocks withdraw, reports say nothing.
pub fn exabgp_line(decision: &Decision, style: &ExabgpStyle) -> Option<String> {
    let verb = match decision.action {
        Outcome::Block => "announce",
        Outcome::Unblock => "withdraw",
        Outcome::Report => return None,
    };
    let prefix = decision.prefix;
    Some(match style {
        ExabgpStyle::Blackhole { next_hop } if decision.action == Outcome::Block => {
            let hop = next_hop.map_or_else(|| "self".to_string(), |hop| hop.to_string());
            format!("{verb} route {prefix} next-hop {hop} community [{BLACKHOLE_COMMUNITY}]")
        }
        ExabgpStyle::Blackhole { .. } => format!("{verb} route {prefix}"),
        ExabgpStyle::Flowspec => {
            format!("{verb} flow route {{ match {{ source {prefix}; }} then {{ discard; }} }}")
        }
    })
}
