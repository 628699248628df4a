//! Attaching the guard to an interface, in the XDP mode the operator asked for.

use std::io;

use anyhow::{Error, Result, anyhow};
use std::path::Path;

use aya::programs::{
    ProgramError, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::{XdpError, XdpLink, XdpLinkId},
};

/// How the operator wants the program attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// In the driver (fast path); fails where the driver has no XDP support.
    Native,
    /// In the generic network stack (works everywhere, slower).
    Generic,
    /// Native, falling back to generic when the driver refuses.
    Auto,
}

/// Where the program ended up, and why there.
#[derive(Debug)]
pub struct Attached {
    pub link: XdpLinkId,
    pub mode: XdpMode,
    /// Set when `auto` fell back to generic: the driver's refusal.
    pub fallback_reason: Option<String>,
    /// The program was swapped into an attachment an earlier controller left pinned.
    pub adopted: bool,
}

pub fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "native",
        XdpMode::Skb => "generic",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "kernel-chosen",
    }
}

/// Refuses an interface this network namespace does not have, in one line.
pub fn require_interface(iface: &str) -> Result<()> {
    if interface_exists(iface) {
        Ok(())
    } else {
        Err(anyhow!(
            "interface {iface:?} does not exist: pick one from `ip link show`"
        ))
    }
}

/// Attaches `program` to `iface`. Errors are one line and say how to fix the problem.
pub fn attach(program: &mut Xdp, iface: &str, mode: AttachMode) -> Result<Attached> {
    require_interface(iface)?;
    let first = match mode {
        AttachMode::Generic => XdpMode::Skb,
        AttachMode::Native | AttachMode::Auto => XdpMode::Driver,
    };
    match program.attach(iface, first) {
        Ok(link) => Ok(Attached {
            link,
            mode: first,
            fallback_reason: None,
            adopted: false,
        }),
        Err(error) if mode == AttachMode::Auto && !is_busy(&error) => {
            let reason = explain(error, iface, first).to_string();
            let link = program
                .attach(iface, XdpMode::Skb)
                .map_err(|e| explain(e, iface, XdpMode::Skb))?;
            Ok(Attached {
                link,
                mode: XdpMode::Skb,
                fallback_reason: Some(reason),
                adopted: false,
            })
        }
        Err(error) => Err(explain(error, iface, first)),
    }
}

/// Attaches through a link pinned at `pin`, so the program keeps guarding when the controller
/// is gone: a link an earlier controller pinned there gets `program` swapped in atomically (no
/// frame goes unguarded); otherwise the program is attached as [`attach`] does and the link
/// pinned. Either way `program` holds the link; dropping it leaves the pinned attachment.
pub fn attach_pinned(
    program: &mut Xdp,
    iface: &str,
    mode: AttachMode,
    pin: &Path,
) -> Result<Attached> {
    let pin_error =
        |e: &dyn std::fmt::Display| anyhow!("the link pinned at {}: {e}", pin.display());
    if pin.exists() {
        let fd_link = FdLink::from(PinnedLink::from_pin(pin).map_err(|e| pin_error(&e))?);
        let link = XdpLink::try_from(fd_link).map_err(|e| pin_error(&e))?;
        let link = program
            .attach_to_link(link)
            .map_err(|e| anyhow!("swapping the program into the attachment on {iface}: {e}"))?;
        return Ok(Attached {
            link,
            mode: XdpMode::Default,
            fallback_reason: None,
            adopted: true,
        });
    }
    let attached = attach(program, iface, mode)?;
    let pinned = program
        .take_link(attached.link)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|link| FdLink::try_from(link).map_err(|e| anyhow!("{e}")))
        .and_then(|fd_link| fd_link.pin(pin).map_err(|e| pin_error(&e)))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_error(&e))?;
    let link = program
        .attach_to_link(link)
        .map_err(|e| anyhow!("holding the attachment on {iface}: {e}"))?;
    Ok(Attached { link, ..attached })
}

/// Looked up in the current network namespace (sysfs may show another one).
fn interface_exists(iface: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return false;
    };
    // SAFETY: NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

fn os_error(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    }
}

fn is_busy(error: &ProgramError) -> bool {
    matches!(os_error(error), Some(libc::EBUSY) | Some(libc::EEXIST))
}

fn explain(error: ProgramError, iface: &str, mode: XdpMode) -> Error {
    let mode = mode_name(mode);
    match os_error(&error) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => anyhow!(
            "{iface} already has an XDP program attached: remove it first \
             (`ip link set dev {iface} xdp off`), or stop the other synguard"
        ),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => anyhow!(
            "{iface} does not support {mode} XDP ({}): try --mode generic or --mode auto",
            io::Error::from_raw_os_error(os_error(&error).unwrap_or(0))
        ),
        _ => anyhow!("attaching to {iface} in {mode} mode failed: {error}"),
    }
}
