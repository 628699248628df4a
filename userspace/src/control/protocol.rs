//! The control protocol: what the command line asks a running controller ([`Request`]) and
//! what it answers ([`Reply`]), one JSON line each way, both tagged and versioned. The same
//! reply types are built from the pinned maps when no controller runs (`control::pinned`), so
//! a verb prints one way whichever answered.

use std::{collections::BTreeMap, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::setting::Setting,
    policy::engine::{Allow, Block, Decision},
};

/// Bumped when a request or reply changes shape; both ends refuse another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// One message on the wire: the protocol version and a request or a reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message<T> {
    pub version: u32,
    #[serde(flatten)]
    pub body: T,
}

impl<T> Message<T> {
    /// `body` in this build's protocol version.
    pub fn new(body: T) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// What the command line asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Flows,
    Stats,
    /// The effective settings.
    Get,
    /// `KEY=VALUE` pairs, keys as `synguard run`'s long flags.
    Set {
        settings: Vec<(String, String)>,
    },
    KeysRotate,
    Detach,
    BlockAdd {
        prefix: IpNet,
        ttl: Option<u64>,
    },
    BlockDel {
        prefix: IpNet,
    },
    BlockList,
    AllowAdd {
        prefix: IpNet,
        bypass: bool,
    },
    AllowDel {
        prefix: IpNet,
    },
    AllowList,
    /// A service as `--protect` takes it (`CIDR:PORTS[:MODE]`).
    ProtectAdd {
        service: String,
    },
    ProtectDel {
        service: String,
    },
    ProtectList,
}

impl Request {
    /// Whether the request only reads (and can be answered from the pinned maps).
    pub fn reads_only(&self) -> bool {
        match self {
            Request::Status
            | Request::Flows
            | Request::Stats
            | Request::BlockList
            | Request::AllowList
            | Request::ProtectList => true,
            Request::Get
            | Request::Set { .. }
            | Request::KeysRotate
            | Request::Detach
            | Request::BlockAdd { .. }
            | Request::BlockDel { .. }
            | Request::AllowAdd { .. }
            | Request::AllowDel { .. }
            | Request::ProtectAdd { .. }
            | Request::ProtectDel { .. } => false,
        }
    }
}

/// What the controller answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Flows {
        flows: Vec<FlowRow>,
    },
    Stats(Stats),
    Settings(Settings),
    Changed {
        changes: Vec<Change>,
    },
    KeysRotated {
        epoch: u64,
    },
    Detaching,
    /// A block added, or lifted (`BlockDel`).
    Decision {
        decision: Decision,
    },
    /// An allow added: the blocks it lifted.
    Allowed {
        lifted: Vec<Decision>,
    },
    /// An allow removed.
    Disallowed,
    Blocks {
        blocks: Vec<Block>,
    },
    Allows {
        allows: Vec<Allow>,
    },
    Services {
        services: Vec<ServiceRow>,
    },
    /// The request was refused; nothing changed.
    Error(ErrorReply),
}

/// A refusal: the one-line reason and the exit status the command line ends with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub message: String,
    pub exit_code: u8,
}

/// The exit status of a refused request (the value was wrong: change it, like a bad flag).
pub const EXIT_REFUSED: u8 = 2;
/// The exit status of a request that failed while being carried out.
pub const EXIT_FAILED: u8 = 1;

/// `synguard status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub flows: FlowStatus,
    pub policy: PolicyStatus,
}

/// The flows by state, as `ss -s` shows sockets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowStatus {
    pub total: u64,
    /// Flows by TCP state, named as `ss` names them (`ESTAB`, `SYN-RECV`...).
    pub states: BTreeMap<String, u64>,
    /// Validated flows whose server has not answered yet.
    pub awaiting_server: u64,
    /// The controller's counts of flow events, by name (none when read from the pinned maps).
    pub counts: Option<BTreeMap<String, u64>>,
    /// The filter in front of the flows map (none when read from the pinned maps).
    pub filter: Option<FilterStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterStatus {
    pub slots: u32,
    pub marked: Option<usize>,
    pub rebuilds: u64,
}

/// The services, the sources with most half-open connections and the lists' sizes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub services: Vec<ServiceStatus>,
    /// Half-open connections over all sources (the controller's decaying count).
    pub half_open: Option<f64>,
    pub top_sources: Vec<SourceStatus>,
    pub blocks: usize,
    pub allows: usize,
    /// The controller's last policy round (none when read from the pinned maps).
    pub last_round: Option<Round>,
}

/// A policy round: how many sources it weighed and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub sources: usize,
    pub seconds: f64,
}

/// A protected service's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `CIDR:PORTS`, as the operator gave it.
    pub service: String,
    pub mode: String,
    /// SYN/s over the last policy round (none when read from the pinned maps).
    pub syn_rate: Option<f64>,
    pub cookies_on: bool,
    pub syns: u64,
    pub cookies_sent: u64,
    pub admitted: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub service: Option<String>,
    pub half_open: f64,
    pub syn_rate: f64,
    pub invalid_ack_rate: f64,
    pub out_of_state_rate: f64,
}

/// One validated flow, for `synguard flows`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    pub client: String,
    pub server: String,
    /// The server end's TCP state, as `ss` names it.
    pub state: String,
    pub joined: bool,
    /// Seconds since the guard validated it (none when read from the pinned maps).
    pub age_s: Option<f64>,
    /// Seconds since its last segment.
    pub idle_s: f64,
    pub to_server: Traffic,
    pub to_client: Traffic,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// `synguard stats`: every counter's total, and its rate over the controller's last interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub iface: String,
    pub total: BTreeMap<String, u64>,
    /// Per second over `interval_s` (none when read from the pinned maps: one reading has
    /// no rate).
    pub per_second: Option<BTreeMap<String, f64>>,
    pub interval_s: f64,
    pub per_cpu_seen: Vec<u64>,
}

/// `synguard get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The configuration file read, if any.
    pub config: Option<PathBuf>,
    pub settings: BTreeMap<String, Setting>,
    /// The keys `set` and SIGHUP may change while the guard runs.
    pub live: Vec<String>,
}

/// A setting that changed: its key, and its value before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
}

/// A protected service as `synguard protect list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    pub slot: u8,
    pub service: String,
    pub mode: String,
    pub cookies_on: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_with_their_tag_and_version() {
        let request = Message::new(Request::BlockAdd {
            prefix: "198.18.0.0/24".parse().unwrap(),
            ttl: Some(60),
        });
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"request":"block_add","prefix":"198.18.0.0/24","ttl":60}"#
        );
        assert_eq!(
            serde_json::from_str::<Message<Request>>(&line).unwrap(),
            request
        );
        let reply = Message::new(Reply::Error(ErrorReply {
            message: "no".into(),
            exit_code: EXIT_REFUSED,
        }));
        let line = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"reply":"error","message":"no","exit_code":2}"#
        );
        assert_eq!(
            serde_json::from_str::<Message<Reply>>(&line).unwrap(),
            reply
        );
        let unit = serde_json::to_string(&Message::new(Request::Status)).unwrap();
        assert_eq!(unit, r#"{"version":1,"request":"status"}"#);
    }

    #[test]
    fn an_unknown_request_is_refused_by_the_parser() {
        let error = serde_json::from_str::<Message<Request>>(r#"{"version":1,"request":"reboot"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `reboot`"), "{error}");
    }
}
