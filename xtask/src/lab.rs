//! The lab: three network namespaces, client -- guard -- server, joined by two veth pairs.
//!
//! ```text
//!  client ns                 guard ns                          server ns
//!  to-guard 198.18.1.2 ---- to-client 198.18.1.1
//!                           to-server 198.19.1.1 ---- to-guard 198.19.1.2  (HTTP on :80)
//! ```
//! Addresses come from 198.18.0.0/15 (RFC 2544); every link also carries IPv6 from
//! 2001:db8::/32 (client 2001:db8:18:1::2, server 2001:db8:19:1::2, the guard ::1 on each
//! side). No namespace has a route out: each has a blackhole default route for both families, so replies to spoofed sources die inside the lab (those to the
//! flood lab's spoofed range, 198.18.128.0/17, are routed to the client namespace and die
//! there, whatever defense sent them). Namespace names
//! carry a per-lab suffix; `down` removes a lab (and `down_all` every lab) even after a crash.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

use crate::{build, cmd};

pub const PREFIX: &str = "sglab-";
pub const CLIENT_ADDR: &str = "198.18.1.2";
pub const GUARD_CLIENT_SIDE_ADDR: &str = "198.18.1.1";
pub const GUARD_SERVER_SIDE_ADDR: &str = "198.19.1.1";
pub const SERVER_ADDR: &str = "198.19.1.2";
/// The same hosts over IPv6 (2001:db8::/32, RFC 3849): every link carries both families.
pub const CLIENT_ADDR6: &str = "2001:db8:18:1::2";
pub const GUARD_CLIENT_SIDE_ADDR6: &str = "2001:db8:18:1::1";
pub const GUARD_SERVER_SIDE_ADDR6: &str = "2001:db8:19:1::1";
pub const SERVER_ADDR6: &str = "2001:db8:19:1::2";
pub const SERVER_PORT: u16 = 80;
/// Where the flood lab's spoofed sources come from (see `flood::packet_socket`).
pub const SPOOFED_PREFIX: &str = "198.18.128.0/17";
/// The guard's interface toward the clients: where synguard attaches.
pub const GUARD_CLIENT_IFACE: &str = "to-client";
pub const GUARD_SERVER_IFACE: &str = "to-server";
/// Name of the client's and the server's interface toward the guard.
pub const PEER_IFACE: &str = "to-guard";

const STATE_ROOT: &str = "/run/synguard-lab";
const BPFFS: &str = "/sys/fs/bpf";
const PIN_ROOT: &str = "/sys/fs/bpf/synguard-lab";
/// The bpffs synguard pins under in the lab (`SYNGUARD_BPFFS`): `ip netns exec` mounts a fresh
/// /sys, so /sys/fs/bpf there is not the host's; a bpffs mounted under /run before it is.
pub const LAB_BPFFS: &str = "/run/synguard-bpffs";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Client,
    Guard,
    Server,
}

impl Host {
    const ALL: [Host; 3] = [Host::Client, Host::Guard, Host::Server];

    fn role(self) -> &'static str {
        match self {
            Host::Client => "client",
            Host::Guard => "guard",
            Host::Server => "server",
        }
    }
}

/// The path MTU `netns`'s kernel has learned toward `to` (its route cache), if any: `ip route
/// get` shows it as `... mtu M` only once learned.
pub fn learned_mtu(netns: &str, to: &str) -> Result<Option<u16>> {
    let out = cmd::stdout(Command::new("ip").args(["-n", netns, "route", "get", to]))?;
    Ok(out
        .split_whitespace()
        .skip_while(|word| *word != "mtu")
        .nth(1)
        .and_then(|mtu| mtu.parse().ok()))
}

/// One lab, by name (`sglab-<suffix>`).
#[derive(Clone, Debug)]
pub struct Lab {
    pub name: String,
}

/// A fresh suffix: the process id and a count of this process's labs, so that two labs of
/// one run, or of two runs at once, never share one; then a few bits of the clock, so that a
/// later run with a recycled process id does not either (a lab a crashed run left may still
/// exist). (Not a hash of the three: two different inputs could give one suffix.)
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let serial = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{serial:x}-{:04x}", std::process::id(), nanos >> 16)
}

impl Lab {
    pub fn named(suffix: &str) -> Lab {
        Lab {
            name: format!("{PREFIX}{suffix}"),
        }
    }

    pub fn netns(&self, host: Host) -> String {
        format!("{}-{}", self.name, host.role())
    }

    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.name)
    }

    fn pin_dir(&self) -> PathBuf {
        Path::new(PIN_ROOT).join(&self.name)
    }

    /// A command run inside one of the lab's namespaces.
    pub fn exec<I, S>(&self, host: Host, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns(host), program])
            .args(args)
            .env("SYNGUARD_BPFFS", LAB_BPFFS);
        command
    }

    /// A flood generator's command: `program` with `args` in the client namespace, under
    /// [`ATTACKER_SCHEDULING`].
    pub fn attacker<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.exec(Host::Client, "chrt", ATTACKER_SCHEDULING);
        command.arg(program).args(args);
        command
    }

    /// Starts `synguard run` in the guard namespace on both of the guard's links, with `args`
    /// after them, and returns once its program is attached (30 s at most; an early exit or
    /// a timeout is an error, the process killed).
    pub fn start_guard(&self, synguard: &Path, args: &[&str], stdout: Stdio) -> Result<Child> {
        let mut guard = self
            .exec(
                Host::Guard,
                synguard.to_str().context("non-UTF-8 path")?,
                [
                    "run",
                    "--iface",
                    GUARD_CLIENT_IFACE,
                    "--server-iface",
                    GUARD_SERVER_IFACE,
                ]
                .iter()
                .chain(args),
            )
            .stdout(stdout)
            .spawn()
            .context("starting synguard")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.has_xdp(Host::Guard, GUARD_CLIENT_IFACE)? {
            if let Some(status) = guard.try_wait()? {
                bail!("synguard exited with {status} before attaching");
            }
            if Instant::now() > deadline {
                let _ = guard.kill();
                bail!("synguard did not attach within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(guard)
    }

    /// Fetches the lab server's page from the client namespace (curl, 5 s at most): true when
    /// the whole page arrived.
    pub fn page_arrives(&self) -> Result<bool> {
        let url = format!("http://{SERVER_ADDR}:{SERVER_PORT}/");
        let out = self
            .exec(Host::Client, "curl", ["-sS", "--max-time", "5", &url])
            .output()?;
        Ok(out.status.success() && out.stdout == crate::lab_server::BODY.as_bytes())
    }

    /// Starts an hping3 flood (under [`ATTACKER_SCHEDULING`]) from the client namespace toward the
    /// lab server, bounded to `seconds` by timeout(1); `args` pick the kind (`-S`,
    /// `-a SOURCE`, `--rand-source`, `-p PORT`...).
    pub fn flood(&self, seconds: u32, args: &[&str]) -> Result<std::process::Child> {
        let seconds = seconds.to_string();
        let mut argv = vec![seconds.as_str(), "hping3", "-q", "--flood"];
        argv.extend_from_slice(args);
        argv.push(SERVER_ADDR);
        self.attacker("timeout", argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting hping3")
    }

    fn ip<const N: usize>(&self, host: Host, args: [&str; N]) -> Result<()> {
        cmd::output(
            Command::new("ip")
                .args(["-n", &self.netns(host)])
                .args(args),
        )?;
        Ok(())
    }

    /// Builds the lab. `synguard` is the binary that pins the peers' pass programs; `server`
    /// is the command line of the HTTP server to start in the server namespace.
    pub fn up(suffix: &str, synguard: &Path, server: &[String]) -> Result<Lab> {
        let lab = Lab::named(suffix);
        if lab.exists() {
            bail!(
                "lab {} already exists: remove it with `cargo xtask lab down`",
                lab.name
            );
        }
        match lab.build(synguard, server) {
            Ok(()) => Ok(lab),
            Err(error) => {
                let _ = lab.down();
                Err(error.context(format!("building lab {}", lab.name)))
            }
        }
    }

    fn build(&self, synguard: &Path, server: &[String]) -> Result<()> {
        use Host::*;
        fs::create_dir_all(self.state_dir())?;
        for host in Host::ALL {
            cmd::output(&mut cmd::new("ip", ["netns", "add", &self.netns(host)]))?;
            self.ip(host, ["link", "set", "lo", "up"])?;
        }
        for (iface, peer_host) in [(GUARD_CLIENT_IFACE, Client), (GUARD_SERVER_IFACE, Server)] {
            let peer_ns = self.netns(peer_host);
            self.ip(
                Guard,
                [
                    "link", "add", iface, "type", "veth", "peer", "name", PEER_IFACE, "netns",
                    &peer_ns,
                ],
            )?;
        }
        let addresses = [
            (Client, PEER_IFACE, CLIENT_ADDR),
            (Guard, GUARD_CLIENT_IFACE, GUARD_CLIENT_SIDE_ADDR),
            (Guard, GUARD_SERVER_IFACE, GUARD_SERVER_SIDE_ADDR),
            (Server, PEER_IFACE, SERVER_ADDR),
        ];
        let addresses6 = [
            (Client, PEER_IFACE, CLIENT_ADDR6),
            (Guard, GUARD_CLIENT_IFACE, GUARD_CLIENT_SIDE_ADDR6),
            (Guard, GUARD_SERVER_IFACE, GUARD_SERVER_SIDE_ADDR6),
            (Server, PEER_IFACE, SERVER_ADDR6),
        ];
        for (host, iface, addr) in addresses6 {
            // No duplicate address detection: the address is usable at once.
            let addr = format!("{addr}/64");
            self.ip(host, ["-6", "addr", "add", &addr, "dev", iface, "nodad"])?;
        }
        for (host, iface, addr) in addresses {
            self.ip(host, ["addr", "add", &format!("{addr}/24"), "dev", iface])?;
            self.ip(host, ["link", "set", iface, "up"])?;
            // XDP must see full checksums, not the partial ones offload leaves.
            cmd::output(&mut self.exec(host, "ethtool", ["-K", iface, "tx", "off"]))?;
        }
        cmd::output(&mut self.exec(Guard, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]))?;
        cmd::output(&mut self.exec(Guard, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]))?;
        // The guard's receive queues run in their own kernel threads (threaded NAPI), as a
        // real NIC's queues have their own CPUs' interrupts, not in the softirq of whoever
        // sent the frame; GRO on makes veth use NAPI with or without an XDP program, so every
        // defense sees its traffic the same way. They get the guard's CPU. So does the
        // client's receive (in the softirq the guard's XDP_TX raises), where the answers to
        // spoofed sources die: it stands in for the guard's NIC sending them, and keeps the
        // real client's SYN-ACKs from waiting in a queue the flood's answers fill. The
        // server's receive, its kernel's TCP work, runs in a thread of its own off the guard's
        // CPU, as the server is another machine.
        let links = [
            (Guard, GUARD_CLIENT_IFACE),
            (Guard, GUARD_SERVER_IFACE),
            (Server, PEER_IFACE),
        ];
        for (host, iface) in links {
            cmd::output(&mut self.exec(host, "ethtool", ["-K", iface, "gro", "on"]))?;
            cmd::output(&mut self.exec(
                host,
                "sh",
                ["-c", &format!("echo 1 > /sys/class/net/{iface}/threaded")],
            ))?;
        }
        pin_receive_threads()?;
        self.ip(
            Client,
            [
                "route",
                "add",
                "198.19.0.0/16",
                "via",
                GUARD_CLIENT_SIDE_ADDR,
            ],
        )?;
        self.ip(
            Server,
            [
                "route",
                "add",
                "198.18.0.0/16",
                "via",
                GUARD_SERVER_SIDE_ADDR,
            ],
        )?;
        // Answers to the floods' spoofed sources travel back toward the client side, as
        // they would out of a real guard, whichever defense sent them; they die at the
        // client's link (see `pin_peer`).
        self.ip(Guard, ["route", "add", SPOOFED_PREFIX, "via", CLIENT_ADDR])?;
        let via_guard6 = [
            (Client, "2001:db8:19::/48", GUARD_CLIENT_SIDE_ADDR6),
            (Server, "2001:db8:18::/48", GUARD_SERVER_SIDE_ADDR6),
        ];
        for (host, prefix, via) in via_guard6 {
            self.ip(host, ["-6", "route", "add", prefix, "via", via])?;
        }
        for host in Host::ALL {
            self.ip(host, ["route", "add", "blackhole", "default"])?;
            self.ip(host, ["-6", "route", "add", "blackhole", "default"])?;
        }
        self.pin_peer_programs(synguard)?;
        self.start_server(server)
    }

    /// Native XDP_TX/REDIRECT on veth needs an XDP program on the peer: pin a pass program on
    /// the client's and the server's side.
    fn pin_peer_programs(&self, synguard: &Path) -> Result<()> {
        mount_bpffs()?;
        fs::create_dir_all(self.pin_dir())?;
        self.pin_peer(synguard, Host::Client, 0)?;
        self.pin_peer(synguard, Host::Server, 0)
    }

    /// Makes the client's side drop about one in `one_in` data frames it receives (0: none),
    /// by re-pinning its peer program with that setting.
    pub fn set_client_loss(&self, synguard: &Path, one_in: u32) -> Result<()> {
        let pin = self.pin_dir().join(Host::Client.role());
        fs::remove_file(&pin).with_context(|| format!("unpinning {}", pin.display()))?;
        self.pin_peer(synguard, Host::Client, one_in)
    }

    /// Makes the client namespace a router for hosts behind it (a test's own namespaces): it
    /// forwards, and its peer program no longer drops frames addressed to others.
    pub fn route_through_client(&self, synguard: &Path) -> Result<()> {
        for forwarding in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            cmd::output(&mut self.exec(Host::Client, "sysctl", ["-qw", forwarding]))?;
        }
        let pin = self.pin_dir().join(Host::Client.role());
        fs::remove_file(&pin).with_context(|| format!("unpinning {}", pin.display()))?;
        self.pin_peer_filtered(synguard, Host::Client, 0, false)
    }

    /// Pins `host`'s peer program, dropping about one in `drop_one_in` data frames. On the
    /// client's side it also drops frames to addresses other than the client's: answers to
    /// spoofed sources, which a real network would not deliver to the client's host, so they
    /// do not load its TCP stack and every defense's answers die the same way.
    fn pin_peer(&self, synguard: &Path, host: Host, drop_one_in: u32) -> Result<()> {
        self.pin_peer_filtered(synguard, host, drop_one_in, host == Host::Client)
    }

    fn pin_peer_filtered(
        &self,
        synguard: &Path,
        host: Host,
        drop_one_in: u32,
        only_for_client: bool,
    ) -> Result<()> {
        let mut command = Command::new(build::lab_tool(synguard));
        command
            .args(["peer-pass", "--netns", &self.netns(host), "--iface"])
            .arg(PEER_IFACE)
            .args(["--drop-one-in", &drop_one_in.to_string()])
            .arg("--pin")
            .arg(self.pin_dir().join(host.role()));
        if only_for_client {
            command.args(["--only-for", CLIENT_ADDR]);
        }
        cmd::output(&mut command)?;
        Ok(())
    }

    fn start_server(&self, server: &[String]) -> Result<()> {
        let log = fs::File::create(self.state_dir().join("server.log"))?;
        let (program, args) = server.split_first().context("empty server command")?;
        let child = {
            use std::os::unix::process::CommandExt;
            self.exec(Host::Server, program, args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: it outlives `lab up` and ignores the terminal's ^C.
                .process_group(0)
                .spawn()
                .context("starting the lab's HTTP server")?
        };
        fs::write(self.state_dir().join("server.pid"), child.id().to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let wanted = format!("{SERVER_ADDR}:{SERVER_PORT}");
        while Instant::now() < deadline {
            let listening = cmd::stdout(&mut self.exec(Host::Server, "ss", ["-Hltn"]))?;
            if listening.contains(&wanted) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the lab's HTTP server did not listen on {wanted} within 10 s")
    }

    /// The lab server's process id (`ip netns exec` runs it in its own process).
    pub fn server_pid(&self) -> Option<i32> {
        fs::read_to_string(self.state_dir().join("server.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
    }

    /// A path in the lab's own state directory (removed with the lab).
    pub fn file(&self, name: &str) -> PathBuf {
        self.state_dir().join(name)
    }

    pub fn exists(&self) -> bool {
        Host::ALL
            .iter()
            .any(|host| Path::new("/run/netns").join(self.netns(*host)).exists())
            || self.state_dir().exists()
    }

    /// Removes everything the lab made; what is already gone is skipped.
    pub fn down(&self) -> Result<()> {
        if let Some(pid) = self.server_pid() {
            // SAFETY: plain kill(2); the process group was created for the server alone.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
        }
        if self.pin_dir().exists() {
            fs::remove_dir_all(self.pin_dir())
                .with_context(|| format!("removing {}", self.pin_dir().display()))?;
        }
        for host in Host::ALL {
            let netns = self.netns(host);
            let path = Path::new("/run/netns").join(&netns);
            if path.exists() {
                remove_guard_pins(&path)?;
                cmd::output(&mut cmd::new("ip", ["netns", "del", &netns]))?;
            }
        }
        if self.state_dir().exists() {
            fs::remove_dir_all(self.state_dir())?;
        }
        Ok(())
    }

    /// One line per namespace: its interfaces with their XDP attachments.
    pub fn status(&self) -> Result<String> {
        let mut out = format!("{}:\n", self.name);
        for host in Host::ALL {
            let links =
                cmd::stdout(Command::new("ip").args(["-n", &self.netns(host), "-br", "link"]))
                    .unwrap_or_else(|e| format!("({e})"));
            let xdp = cmd::stdout(Command::new("ip").args(["-n", &self.netns(host), "-d", "link"]))
                .map(|text| text.matches("prog/xdp").count())
                .unwrap_or(0);
            out.push_str(&format!(
                "  {:<7} {} ({} XDP program(s)): {}\n",
                host.role(),
                self.netns(host),
                xdp,
                links.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        Ok(out)
    }

    /// Whether `iface` in `host` has an XDP program attached.
    pub fn has_xdp(&self, host: Host, iface: &str) -> Result<bool> {
        let details = cmd::stdout(Command::new("ip").args([
            "-n",
            &self.netns(host),
            "-d",
            "link",
            "show",
            "dev",
            iface,
        ]))?;
        Ok(details.contains("prog/xdp"))
    }
}

/// `synguard run` flags for a guard whose output nobody reads: no counter lines, warnings only.
pub const QUIET_GUARD: [&str; 4] = ["--interval", "3600", "--log-level", "warn"];

/// Kernel threads whose name starts with `napi/<iface>-` for one of `ifaces` (threaded NAPI;
/// the same names in every lab).
fn receive_threads(ifaces: &[&str]) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| {
                ifaces
                    .iter()
                    .any(|iface| comm.starts_with(&format!("napi/{iface}-")))
            })
        })
        .collect()
}

/// The guard's receive threads, those of its two links: XDP, netfilter and routing run there,
/// whatever the defense.
pub fn guard_receive_threads() -> Vec<i32> {
    receive_threads(&[GUARD_CLIENT_IFACE, GUARD_SERVER_IFACE])
}

/// The CPU the guard's receive threads get to themselves, on a machine with two or more: the
/// last one. A real guard's NIC queues have their own cores, and the attackers and clients
/// are other machines; here they share one box, and a sender on the guard's CPU would stall
/// the very queue its frames wait in.
pub fn guard_cpu() -> Option<usize> {
    let cpus = machine_cpus();
    (cpus >= 2).then(|| cpus - 1)
}

/// The machine's online CPUs, not this process's share (its affinity may leave some out).
pub fn machine_cpus() -> usize {
    // SAFETY: sysconf(3) reads a system constant.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

fn set_affinity(pid: i32, cpus: impl Iterator<Item = usize>) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET/sched_setaffinity only write into it
    // or read it, with its own size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting the CPU affinity of {pid}"));
        }
    }
    Ok(())
}

/// Pins the guard's receive threads to [`guard_cpu`] and the server's to the other CPUs.
fn pin_receive_threads() -> Result<()> {
    if let Some(cpu) = guard_cpu() {
        for pid in guard_receive_threads() {
            set_affinity(pid, std::iter::once(cpu))?;
        }
        for pid in receive_threads(&[PEER_IFACE]) {
            set_affinity(pid, 0..cpu)?;
        }
    }
    Ok(())
}

/// Keeps the calling thread, and the threads and processes it starts from now on (floods,
/// clients, servers, synguard's controller), off [`guard_cpu`].
pub fn keep_off_guard_cpu() -> Result<()> {
    if let Some(cpu) = guard_cpu() {
        set_affinity(0, 0..cpu)?;
    }
    Ok(())
}

/// `chrt` arguments for flood generators: SCHED_IDLE. The attacker's CPU is not the clients'
/// nor the server's in a real network; here they share one, and the generator, always
/// runnable, must not delay their wakeups. At `nice 19` it still did: the scheduler may let
/// a running task use up its time slice before a woken one runs. Under SCHED_IDLE a woken
/// task preempts the generator at once (the legitimate client's connect p99 under the
/// packet-socket flood against synguard: 2.75 ms at `nice 19`, 2.00 ms now; medians of 3).
const ATTACKER_SCHEDULING: [&str; 2] = ["--idle", "0"];

/// The guest's halt-polling window, on a VM with the haltpoll cpuidle driver.
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// While alive, idle CPUs poll for `ns` before they halt; the previous setting comes back on
/// drop. On a VM whose idle vCPUs halt at once (Firecracker here: `guest_halt_poll_ns=0`), a
/// halted vCPU can wake later than the guard's 256-slot veth queue lasts at a few hundred
/// thousand frames/s (measured here at 300k frames/s: 300-430 frames/s refused by the queue
/// without polling, about 55/s with 200 us of it; on a busier host 200 us still let the queue
/// refuse 45-86k frames/s under hping3, 2 ms 0.7-2.5k/s); a NIC's interrupt wakes a
/// bare-metal core in microseconds. Without the haltpoll driver this does nothing.
pub struct IdlePolling {
    previous: Option<String>,
}

impl IdlePolling {
    pub fn start(ns: u64) -> IdlePolling {
        let previous = fs::read_to_string(HALT_POLL_NS)
            .ok()
            .filter(|_| fs::write(HALT_POLL_NS, ns.to_string()).is_ok());
        IdlePolling { previous }
    }
}

impl Drop for IdlePolling {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            let _ = fs::write(HALT_POLL_NS, previous.trim());
        }
    }
}

/// Stops a guard started by [`Lab::start_guard`]: SIGINT makes synguard detach and exit.
pub fn stop_guard(guard: &mut Child) {
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(guard.id() as i32, libc::SIGINT) };
    let _ = guard.wait();
}

/// Every lab on the machine, from namespace names and state directories.
pub fn all() -> Result<Vec<Lab>> {
    let mut names = lab_names(&cmd::stdout(&mut cmd::new("ip", ["netns", "list"]))?);
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        names.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()));
    }
    names.sort();
    names.dedup();
    Ok(names.into_iter().map(|name| Lab { name }).collect())
}

/// Lab names in `ip netns list` output (`NAME [(id: N)]` per line); other namespaces ignored.
fn lab_names(netns_list: &str) -> Vec<String> {
    netns_list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|ns| {
            let rest = ns.strip_prefix(PREFIX)?;
            let (suffix, role) = rest.rsplit_once('-')?;
            Host::ALL
                .iter()
                .any(|host| host.role() == role)
                .then(|| format!("{PREFIX}{suffix}"))
        })
        .collect()
}

/// Mounts bpffs where the lab's pins go: /sys/fs/bpf (the peers' programs) and the lab's
/// own bpffs for synguard (see [`LAB_BPFFS`]), each unless already there.
fn mount_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    for path in [BPFFS, LAB_BPFFS] {
        if mounts
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some(path))
        {
            continue;
        }
        fs::create_dir_all(path)?;
        cmd::output(&mut cmd::new("mount", ["-t", "bpf", "bpf", path]))?;
    }
    Ok(())
}

/// Removes its lab when dropped, also when a test panics.
pub struct LabGuard(pub Lab);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(error) = self.0.down() {
            eprintln!("removing lab {}: {error:#}", self.0.name);
        }
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

/// The command line that runs the lab's HTTP server, given the xtask binary.
pub fn server_command(xtask: &Path) -> Vec<String> {
    vec![
        xtask.to_string_lossy().into_owned(),
        "lab-http-server".into(),
        "--listen".into(),
        format!("{SERVER_ADDR}:{SERVER_PORT}"),
        "--listen".into(),
        format!("[{SERVER_ADDR6}]:{SERVER_PORT}"),
    ]
}

/// Where a synguard keeps what outlives it (pins, state, control socket), each entry named
/// after its network namespace's inode (`net<inode>-<iface>...`).
pub const GUARD_LEFTOVER_DIRS: [&str; 3] = [
    "/sys/fs/bpf/synguard",
    "/run/synguard-bpffs/synguard",
    "/run/synguard",
];

/// Removes what a synguard killed in the namespace at `netns` left pinned (maps, links), its
/// state and its control socket: synguard names them after the namespace's inode.
fn remove_guard_pins(netns: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("net{}-", fs::metadata(netns)?.ino());
    for root in GUARD_LEFTOVER_DIRS {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let stale = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(&prefix));
            if !stale {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_come_from_our_namespaces_only() {
        let listing = "sglab-1a2b-server (id: 2)\nsglab-1a2b-client (id: 0)\nother-ns\nsglab-9-guard\nsglab-x-other\n";
        let mut names = lab_names(listing);
        names.dedup();
        assert_eq!(names, ["sglab-1a2b", "sglab-9"]);
    }

    #[test]
    fn suffixes_do_not_repeat() {
        let suffixes: std::collections::HashSet<String> =
            (0..1000).map(|_| unique_suffix()).collect();
        assert_eq!(suffixes.len(), 1000);
    }

    #[test]
    fn namespace_names_carry_the_lab_name() {
        let lab = Lab::named("abc");
        assert_eq!(lab.netns(Host::Guard), "sglab-abc-guard");
        assert_eq!(lab.netns(Host::Client), "sglab-abc-client");
    }
}
