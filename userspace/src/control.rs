//! The running controller's control socket: `synguard flows` and `synguard status` ask it over
//! a Unix socket, one request line in, one JSON document out.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Where the controller attached to `iface` listens.
pub const SOCKET_DIR: &str = "/run/synguard";

pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

/// The socket to talk to: the one of `iface`, or the only one there is.
fn pick_socket(iface: Option<&str>) -> Result<PathBuf> {
    if let Some(iface) = iface {
        return Ok(socket_path(iface));
    }
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(SOCKET_DIR)
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match sockets.len() {
        0 => bail!("no synguard is running here: start one with `synguard run --iface IFACE`"),
        1 => Ok(sockets.remove(0)),
        _ => bail!(
            "several synguards are running ({}): pick one with --iface",
            sockets
                .iter()
                .filter_map(|p| p.file_stem().and_then(|s| s.to_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Sends `request` to the running controller and returns its answer.
pub fn ask(iface: Option<&str>, request: &str) -> Result<Value> {
    let path = pick_socket(iface)?;
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "no synguard answers at {} ({e}): is `synguard run` running on that interface?",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(stream, "{request}")?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the controller's answer")?;
    let value: Value =
        serde_json::from_str(&answer).context("the controller's answer is not JSON")?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        bail!("{error}");
    }
    Ok(value)
}
