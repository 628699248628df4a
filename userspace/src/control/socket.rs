//! Where a controller's control socket lives (one per interface and network namespace) and
//! who may use it: root alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where the controllers listen.
pub const SOCKET_DIR: &str = "/run/synguard";

/// This process's network namespace (its inode): interface names repeat across namespaces,
/// so the socket names carry it.
fn netns_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map_or(0, |meta| meta.ino())
}

fn socket_prefix() -> String {
    format!("net{}-", netns_id())
}

/// The guard on `iface` in this network namespace, as its socket, pins and state are named.
pub fn instance_id(iface: &str) -> String {
    format!("{}{iface}", socket_prefix())
}

/// Where the controller attached to `iface` in this network namespace listens.
pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{}.sock", instance_id(iface)))
}

/// The socket of the controller to talk to: the one of `iface`, or the only one there is
/// (`None`: none is there).
pub fn pick_socket(iface: Option<&str>) -> Result<Option<PathBuf>> {
    if let Some(iface) = iface {
        let path = socket_path(iface);
        return Ok(path.exists().then_some(path));
    }
    let prefix = socket_prefix();
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(SOCKET_DIR)
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".sock"))
                })
                .collect()
        })
        .unwrap_or_default();
    match sockets.len() {
        0 => Ok(None),
        1 => Ok(Some(sockets.remove(0))),
        _ => bail!(
            "several synguards are running ({}): pick one with --iface",
            sockets
                .iter()
                .filter_map(|p| p.file_stem().and_then(|s| s.to_str()))
                .map(|stem| stem.trim_start_matches(&prefix))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Creates the socket directory (root only) and makes a freshly bound socket root's alone: it
/// changes what the guard does.
pub fn secure(socket: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(SOCKET_DIR, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {SOCKET_DIR}"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", socket.display()))
}

/// Refuses a socket that is not root's alone: whoever else could write it could have put a
/// listener there.
pub fn check_owner(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("no control socket at {}", path.display()))?;
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        bail!(
            "refusing the control socket {}: it must be root's alone (owner uid {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}
