//! What outlives the controller, so that a restart loses nothing: the maps and the XDP links
//! pinned on bpffs (`/sys/fs/bpf/synguard/net<netns>-<iface>/`: the programs keep defending
//! while no controller runs), and a state directory (`/run/synguard/net<netns>-<iface>.d/`,
//! root only) with the cookie secret, the policy's blocks and allows, and the build that
//! pinned the maps (another build's maps are not adopted).

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::control::socket;

/// Where bpffs is mounted, unless `--bpffs` (or `SYNGUARD_BPFFS`) says otherwise.
pub const BPFFS: &str = "/sys/fs/bpf";
/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pinned maps, by name: every map of the object but aya-log's ring. Scratch maps too:
/// while a new controller swaps its programs in, the old and the new ones hand frames to each
/// other through them.
pub const PINNED_MAPS: &[&str] = &[
    "COUNTERS",
    "PARSE_SCRATCH",
    "SEGMENT_SCRATCH",
    "FIB_SCRATCH",
    "PAYLOAD_SCRATCH",
    "STAGES",
    "NEW_FLOW",
    "GUARDED",
    "COOKIE_KEYS",
    "SYN_ACK_SETTINGS",
    "PROTECTED",
    "SERVICES",
    "SERVICE_COUNTERS",
    "SOURCES",
    "VOUCHED",
    "BLOCKED",
    "ALLOWED",
    "TRIE_KEY",
    "SOURCE_SKETCH",
    "POLICY_SETTINGS",
    "FLOWS",
    "FLOW_FILTER",
    "FLOW_FILTER_ACTIVE",
    "FLOW_EVENTS",
    "RESET_BUDGET",
    "FORGOTTEN",
];

/// The pinned XDP links.
pub const CLIENT_LINK: &str = "link-client";
pub const SERVER_LINK: &str = "link-server";
/// The state files of the build and the map layout that started the guard.
const BUILD_FILE: &str = "build";
const LAYOUT_FILE: &str = "map-layout";
/// The state file of the cookie secret (when no key file gives it).
pub const SECRET_FILE: &str = "cookie-secret";
/// The state file of the manual key rotations (they shift the key schedule).
pub const ROTATIONS_FILE: &str = "key-rotations";

/// The pins and the state of the guard on `iface` in this network namespace.
#[derive(Clone, Debug)]
pub struct Pins {
    /// On bpffs: maps and links.
    pub dir: PathBuf,
    /// Regular files: secret, policy, build.
    pub state: PathBuf,
}

impl Pins {
    /// The pins of the guard on `iface`, under the bpffs mounted at `bpffs`.
    pub fn of(iface: &str, bpffs: &Path) -> Self {
        let id = socket::instance_id(iface);
        Self {
            dir: bpffs.join("synguard").join(&id),
            state: Path::new(socket::SOCKET_DIR).join(format!("{id}.d")),
        }
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A guard left running here (its client link is pinned).
    pub fn adoptable(&self) -> bool {
        self.link(CLIENT_LINK).exists()
    }

    /// Makes sure bpffs is mounted at `bpffs` and the directories exist (root only).
    pub fn prepare(&self, bpffs: &Path) -> Result<()> {
        mount_bpffs(bpffs)?;
        for dir in [&self.dir, &self.state] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            set_mode(dir, 0o700)?;
        }
        Ok(())
    }

    /// Checks that the pinned maps were made by this build, or records that they are.
    /// The build and the map layout of the guard these pins belong to, as its start recorded
    /// them (`None`: not recorded).
    fn recorded(&self) -> (Option<String>, Option<u32>) {
        let read = |name: &str| {
            std::fs::read_to_string(self.state.join(name))
                .ok()
                .map(|text| text.trim().to_string())
        };
        (
            read(BUILD_FILE),
            read(LAYOUT_FILE).and_then(|text| text.parse().ok()),
        )
    }

    /// Refuses to read the pins of a guard whose maps are laid out otherwise than this build's.
    pub fn check_layout(&self, layout: u32) -> Result<()> {
        match self.recorded() {
            (_, Some(pinned)) if pinned == layout => Ok(()),
            (build, pinned) => bail!(
                "the guard attached here keeps its maps in another layout ({}, build {}) than \
                 this synguard ({layout}): read it with the synguard that started it",
                pinned.map_or("unrecorded".to_string(), |l| l.to_string()),
                build.unwrap_or_default()
            ),
        }
    }

    /// Claims the pins for this build and map layout. Adopting a guard another build left
    /// running is an upgrade in place when its maps have this layout (returns its build); a
    /// guard of another layout is refused in one line, and nothing changes.
    pub fn claim(&self, build: &str, layout: u32, adopting: bool) -> Result<Option<String>> {
        let (pinned_build, pinned_layout) = self.recorded();
        if adopting {
            match (&pinned_build, pinned_layout) {
                (_, Some(pinned)) if pinned == layout => {}
                (Some(pinned), None) if pinned == build => {}
                (pinned_build, pinned) => bail!(
                    "the guard attached here keeps its maps in layout {} (build {}), this build \
                     in layout {layout}: they cannot be carried over; `synguard detach` first \
                     (its flows are cut), or run a build of its layout",
                    pinned.map_or("unrecorded".to_string(), |l| l.to_string()),
                    pinned_build.as_deref().unwrap_or("unknown")
                ),
            }
        }
        write_private(&self.state.join(BUILD_FILE), build.as_bytes())?;
        write_private(&self.state.join(LAYOUT_FILE), layout.to_string().as_bytes())?;
        Ok(pinned_build.filter(|pinned| adopting && pinned != build))
    }

    /// Reads a state file, if there is one.
    pub fn read(&self, name: &str) -> Result<Option<String>> {
        match std::fs::read_to_string(self.state.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("reading {}: {e}", self.state.join(name).display())),
        }
    }

    /// Writes a state file atomically (root only).
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<()> {
        write_private(&self.state.join(name), contents)
    }

    /// Removes every pin (maps and links: the programs detach) and the state.
    pub fn remove(&self) -> Result<()> {
        for dir in [&self.dir, &self.state] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => bail!("removing {}: {e}", dir.display()),
            }
        }
        Ok(())
    }
}

/// The one interface with a guard pinned (under `bpffs`) in this network namespace.
pub fn attached_iface(bpffs: &Path) -> Result<String> {
    let prefix = socket::instance_id("");
    let root = bpffs.join("synguard");
    let ifaces: Vec<String> = std::fs::read_dir(&root)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match ifaces.as_slice() {
        [] => bail!("no synguard is attached in this network namespace"),
        [iface] => Ok(iface.clone()),
        several => bail!(
            "synguard is attached to several interfaces ({}): pick one with --iface",
            several.join(", ")
        ),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting {}", path.display()))
}

/// Writes `path` through a temporary file and a rename: a crash leaves the old or the new.
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("new");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

/// Mounts bpffs on `bpffs` when it is not mounted there yet.
fn mount_bpffs(bpffs: &Path) -> Result<()> {
    let shown = bpffs.display();
    std::fs::create_dir_all(bpffs).with_context(|| format!("creating {shown}"))?;
    let path = std::ffi::CString::new(bpffs.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs(2) writes into the struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct we own.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    {
        return Ok(());
    }
    let kind = std::ffi::CString::new("bpf")?;
    // SAFETY: mount(2) with NUL-terminated strings we own and no data.
    let rc = unsafe {
        libc::mount(
            kind.as_ptr(),
            path.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "bpffs is not mounted on {shown} and mounting it failed ({}): `mount -t bpf bpf {shown}`",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A short fingerprint of the embedded eBPF object (FNV-1a): maps pinned by another build
/// may have other layouts.
pub fn build_id(object: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in object {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
