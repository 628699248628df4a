//! The controller's side of the control socket: one request line in, one reply line out.

use std::time::Duration;

use anyhow::{Context, Result};
use log::info;

use crate::{
    config::lists::parse_prefix,
    config::{run_args::LIVE_KEYS, service::ProtectedService},
    daemon::live::Live,
    dataplane::persist::ROTATIONS_FILE,
};

/// Answers one control request (a JSON object naming the request) with one JSON line.
pub async fn answer(stream: tokio::net::UnixStream, live: &mut Live<'_>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = BufReader::new(stream);
    let mut request = String::new();
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read_line(&mut request));
    if !matches!(read.await, Ok(Ok(_))) {
        return;
    }
    let reply = match serde_json::from_str::<serde_json::Value>(&request) {
        Ok(request) => handle(&request, live)
            .unwrap_or_else(|error| serde_json::json!({ "error": format!("{error:#}") })),
        Err(error) => serde_json::json!({ "error": format!("a request must be JSON: {error}") }),
    };
    let _ = stream
        .get_mut()
        .write_all(format!("{reply}\n").as_bytes())
        .await;
}

fn handle(request: &serde_json::Value, live: &mut Live<'_>) -> Result<serde_json::Value> {
    use serde_json::json;
    let (flows, policy) = (&*live.flows, &mut *live.policy);
    let prefix = || {
        request["prefix"]
            .as_str()
            .context("the request names no prefix")
            .and_then(parse_prefix)
    };
    Ok(match request["request"].as_str().unwrap_or("") {
        "flows" => flows.flows_json(),
        "stats" => live.stats.clone(),
        "keys_rotate" => {
            let epoch = live.keys.rotate(live.ebpf, live.args.cookie_rotation)?;
            live.pins
                .write(ROTATIONS_FILE, live.keys.extra.to_string().as_bytes())?;
            info!("cookie keys rotated by hand (epoch {epoch}); the previous key stays valid");
            json!({ "epoch": epoch })
        }
        "detach" => {
            live.detach = true;
            json!({ "detaching": true })
        }
        "status" => {
            let mut status = flows.status_json();
            status["policy"] = policy.status_json(10);
            status
        }
        "block_add" => json!({ "decision": policy.block(prefix()?, request["ttl"].as_u64())? }),
        "block_del" => json!({ "decision": policy.unblock(prefix()?)? }),
        "block_list" => policy.blocks_json(),
        "allow_add" => {
            let bypass = request["bypass"].as_bool().unwrap_or(false);
            json!({ "lifted": policy.allow(prefix()?, bypass)? })
        }
        "allow_del" => {
            policy.disallow(prefix()?)?;
            json!({ "removed": true })
        }
        "allow_list" => policy.allows_json(),
        "protect_add" => {
            let service: ProtectedService = request["service"]
                .as_str()
                .context("the request names no service")?
                .parse()?;
            policy.protect(service)?;
            policy.protected_json()
        }
        "protect_del" => {
            let service: ProtectedService = request["service"]
                .as_str()
                .context("the request names no service")?
                .parse()?;
            policy.unprotect(&service)?;
            policy.protected_json()
        }
        "protect_list" => policy.protected_json(),
        "get" => json!({
            "config": live.config.path,
            "settings": live.config.effective,
            "live": LIVE_KEYS,
        }),
        "set" => {
            let settings: Vec<(String, String)> =
                serde_json::from_value(request["settings"].clone())
                    .context("a set request carries [KEY, VALUE] pairs")?;
            json!({ "changed": live.set(&settings)? })
        }
        other => anyhow::bail!("unknown request {other:?}"),
    })
}
