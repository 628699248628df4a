//! The controller's side of the control socket: one request line in, one reply line out, every
//! request answered by one exhaustive match.

use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    config::{run_args::live_keys, service::ProtectedService},
    control::protocol::{
        EXIT_FAILED, EXIT_REFUSED, ErrorReply, Message, PROTOCOL_VERSION, Reply, Request, Settings,
        Stats, Status,
    },
    daemon::live::Live,
};

/// How many sources `synguard status` lists.
const TOP_SOURCES: usize = 10;

/// Answers one request on `stream`; `stats` are the counters now.
pub async fn answer(stream: tokio::net::UnixStream, live: &mut Live<'_>, stats: Stats) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read_line(&mut line));
    if !matches!(read.await, Ok(Ok(_))) {
        return;
    }
    let reply = match serde_json::from_str::<Message<Request>>(&line) {
        Ok(message) if message.version != PROTOCOL_VERSION => refused(format!(
            "this controller speaks control protocol {PROTOCOL_VERSION}, the request came in {}: \
             use the synguard binary of the running build",
            message.version
        )),
        Ok(message) => dispatch(message.body, live, stats).unwrap_or_else(|error| {
            Reply::Error(ErrorReply {
                message: format!("{error:#}"),
                exit_code: EXIT_FAILED,
            })
        }),
        Err(error) => refused(format!("not a control request: {error}")),
    };
    let mut text = serde_json::to_string(&Message::new(reply)).unwrap_or_default();
    text.push('\n');
    let _ = stream.get_mut().write_all(text.as_bytes()).await;
}

fn refused(message: String) -> Reply {
    Reply::Error(ErrorReply {
        message,
        exit_code: EXIT_REFUSED,
    })
}

fn dispatch(request: Request, live: &mut Live<'_>, stats: Stats) -> Result<Reply> {
    Ok(match request {
        Request::Status => Reply::Status(Status {
            flows: live.flows.status(),
            policy: live.policy.status(TOP_SOURCES),
        }),
        Request::Flows => Reply::Flows {
            flows: live.flows.rows(),
        },
        Request::Stats => Reply::Stats(stats),
        Request::Get => Reply::Settings(Settings {
            config: live.config.path.clone(),
            settings: live.config.effective.clone(),
            live: live_keys(),
        }),
        Request::Set { settings } => Reply::Changed {
            changes: live.set(&settings)?,
        },
        Request::KeysRotate => Reply::KeysRotated {
            epoch: live.rotate_keys()?,
        },
        Request::Detach => {
            live.detach = true;
            Reply::Detaching
        }
        Request::BlockAdd { prefix, ttl } => Reply::Decision {
            decision: live.policy.block(prefix, ttl)?,
        },
        Request::BlockDel { prefix } => Reply::Decision {
            decision: live.policy.unblock(prefix)?,
        },
        Request::BlockList => Reply::Blocks {
            blocks: live.policy.blocks(),
        },
        Request::AllowAdd { prefix, bypass } => Reply::Allowed {
            lifted: live.policy.allow(prefix, bypass)?,
        },
        Request::AllowDel { prefix } => {
            live.policy.disallow(prefix)?;
            Reply::Disallowed
        }
        Request::AllowList => Reply::Allows {
            allows: live.policy.allows(),
        },
        Request::ProtectAdd { service } => {
            live.policy.protect(service.parse::<ProtectedService>()?)?;
            Reply::Services {
                services: live.policy.services(),
            }
        }
        Request::ProtectDel { service } => {
            live.policy
                .unprotect(&service.parse::<ProtectedService>()?)?;
            Reply::Services {
                services: live.policy.services(),
            }
        }
        Request::ProtectList => Reply::Services {
            services: live.policy.services(),
        },
    })
}
