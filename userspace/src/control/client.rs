//! The command line's side of the control socket: one request out, one reply in.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::control::{
    protocol::{Message, PROTOCOL_VERSION, Reply, Request},
    socket::{check_owner, pick_socket},
};

/// A request the controller refused: its reason, and the exit status to end with.
#[derive(Debug)]
pub struct Refused {
    pub message: String,
    pub exit_code: u8,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// A connection to the controller of `iface` (or the only one), or `None` when no controller
/// listens there (none started, or one killed without removing its socket).
pub fn connect(iface: Option<&str>) -> Result<Option<UnixStream>> {
    // SAFETY: geteuid(2) has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        bail!("talking to synguard needs root: run it with sudo");
    }
    let Some(path) = pick_socket(iface)? else {
        return Ok(None);
    };
    check_owner(&path)?;
    match UnixStream::connect(&path) {
        Ok(stream) => Ok(Some(stream)),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error).with_context(|| format!("connecting to {}", path.display())),
    }
}

/// Sends `request` and reads the reply; a refusal comes back as a [`Refused`] error.
pub fn exchange(mut stream: UnixStream, request: &Request) -> Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(&Message::new(request))?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the controller's answer")?;
    let message: Message<Reply> = serde_json::from_str(&answer).with_context(|| {
        format!("the controller's answer is not a control protocol {PROTOCOL_VERSION} reply")
    })?;
    match message.body {
        Reply::Error(error) => Err(Refused {
            message: error.message,
            exit_code: error.exit_code,
        }
        .into()),
        reply => Ok(reply),
    }
}
