//! What the lab test files share: the lab, polling, and synguard running in the guard
//! namespace with its output collected; plus sockets opened inside a lab namespace.
#![allow(dead_code)] // each test file uses its own part

use std::{
    io::{BufRead, BufReader, ErrorKind, Read},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use xtask::lab::{self, GUARD_CLIENT_IFACE, Host, Lab, LabGuard, SERVER_ADDR};

pub fn synguard_bin() -> PathBuf {
    std::env::var_os("SYNGUARD_BIN")
        .map(PathBuf::from)
        .expect("SYNGUARD_BIN is not set: run the lab tests through `cargo xtask test`")
}

/// The control socket of the guard attached to the guard namespace's client-side link.
pub fn control_socket(lab: &Lab) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let netns = format!("/run/netns/{}", lab.netns(Host::Guard));
    let ino = std::fs::metadata(&netns).unwrap().ino();
    PathBuf::from(format!("/run/synguard/net{ino}-{GUARD_CLIENT_IFACE}.sock"))
}

pub fn new_lab() -> LabGuard {
    xtask::bootstrap::require_root().expect("the lab tests need root");
    let server = lab::server_command(std::path::Path::new(env!("CARGO_BIN_EXE_xtask")));
    LabGuard(Lab::up(&lab::unique_suffix(), &synguard_bin(), &server).expect("lab up"))
}

/// Polls `condition` every 50 ms until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// synguard running in the guard namespace, its JSON counter lines collected as they come.
pub struct Guard {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Guard {
    pub fn start(lab: &Lab, mode: &str, extra: &[&str]) -> Guard {
        Self::start_build(lab, &synguard_bin(), mode, extra)
    }

    /// [`Guard::start`] with another build of synguard.
    pub fn start_build(lab: &Lab, bin: &std::path::Path, mode: &str, extra: &[&str]) -> Guard {
        let mut child = lab
            .exec(
                Host::Guard,
                bin.to_str().unwrap(),
                [
                    "run",
                    "--iface",
                    GUARD_CLIENT_IFACE,
                    "--mode",
                    mode,
                    "--json",
                    "--interval",
                    "0.2",
                ],
            )
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting synguard");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("synguard printed a non-JSON line {line:?}: {e}"));
                sink.lock().unwrap().push(value);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let guard = Guard {
            child,
            lines,
            stderr,
        };
        // Ready as systemd sees it: attached, and its control socket answering (a killed
        // controller's socket may still be there, but nobody listens on it).
        let socket = control_socket(lab);
        wait_for(
            "synguard to attach and listen",
            Duration::from_secs(30),
            || {
                lab.has_xdp(Host::Guard, GUARD_CLIENT_IFACE).unwrap()
                    && std::os::unix::net::UnixStream::connect(&socket).is_ok()
            },
        );
        guard
    }

    /// The totals of the latest counter line (one snapshot: compare fields of one line).
    pub fn totals(&self) -> Value {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|line| line["type"] == "counters")
            .map(|line| line["total"].clone())
            .unwrap_or(Value::Null)
    }

    /// Waits for a counter line read entirely after this call, so totals include everything
    /// that happened before it.
    pub fn settle(&self) {
        let count = || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line["type"] == "counters")
                .count()
        };
        let seen = count();
        wait_for("a fresh counter line", Duration::from_secs(5), || {
            count() >= seen + 2
        });
    }

    /// A counter of the latest counter line; a name the guard does not print is an error,
    /// never a zero.
    pub fn total(&self, counter: &str) -> u64 {
        let mut totals = self.totals();
        if totals.is_null() {
            wait_for("a first counter line", Duration::from_secs(5), || {
                !self.totals().is_null()
            });
            totals = self.totals();
        }
        totals[counter]
            .as_u64()
            .unwrap_or_else(|| panic!("synguard prints no counter named {counter:?}: {totals}"))
    }

    /// Every JSON line of a type seen so far (`decision`, `auto_mode`, ...).
    pub fn records(&self, kind: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line["type"] == kind)
            .cloned()
            .collect()
    }

    /// The handshake event for a client port, once it arrived.
    pub fn handshake(&self, client_port: u16) -> Option<Value> {
        let suffix = format!(":{client_port}");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|line| {
                line["type"] == "handshake"
                    && line["client"]
                        .as_str()
                        .is_some_and(|c| c.ends_with(&suffix))
            })
            .cloned()
    }

    /// Sends `signal` to the running synguard.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// What synguard wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `signal`, then the exit status and everything synguard wrote to stderr.
    pub fn stop_with(mut self, signal: i32) -> (std::process::ExitStatus, String) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        // The reader threads end with the pipes; give them the moment they need.
        wait_for("stderr to drain", Duration::from_secs(5), || {
            let stderr = self.stderr.lock().unwrap();
            stderr.contains("detached") || stderr.contains("keep guarding") || !status.success()
        });
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stderr)
    }

    pub fn stop(self) -> (std::process::ExitStatus, String) {
        self.stop_with(libc::SIGINT)
    }
}

/// Runs a synguard command in the guard namespace to completion.
pub fn synguard_cmd(lab: &Lab, args: &[&str]) -> std::process::Output {
    lab.exec(Host::Guard, synguard_bin().to_str().unwrap(), args)
        .output()
        .unwrap()
}

/// Runs `work` on a thread that entered `host`'s network namespace: sockets it opens live
/// there (and stay there when handed back to other threads).
pub fn in_netns<T: Send + 'static>(
    lab: &Lab,
    host: Host,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    in_named_netns(&lab.netns(host), work)
}

/// [`in_netns`] for any namespace, by name (a test's own, beside the lab's).
pub fn in_named_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let netns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Deterministic pseudo-random bytes (xorshift), so each end can check the other's stream.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn digest(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

pub fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("reading to EOF");
    bytes
}

/// `size` bytes from a server on `port` to a client in `client_netns`, then `size` bytes
/// back; panics unless both arrive whole and unchanged.
pub fn transfer_both_ways(lab: &Lab, client_netns: &str, server: SocketAddr, size: usize) {
    use std::io::Write;
    let listener = listen_on(lab, server);
    let serving = thread::spawn(move || {
        // Download: the server sends, the client checks.
        let mut download = accept(&listener);
        download.write_all(&pattern(size, 1)).unwrap();
        drop(download);
        // Upload: the client sends, the server reports what it got.
        let mut upload = accept(&listener);
        let received = read_all(&mut upload);
        upload
            .write_all(&(received.len() as u64).to_be_bytes())
            .unwrap();
        upload.write_all(&digest(&received).to_be_bytes()).unwrap();
    });
    let mut download = connect_to(client_netns, server);
    let received = read_all(&mut download);
    assert_eq!(received.len(), size, "download length");
    assert_eq!(
        digest(&received),
        digest(&pattern(size, 1)),
        "download content"
    );
    drop(download);

    let mut upload = connect_to(client_netns, server);
    upload.write_all(&pattern(size, 2)).unwrap();
    upload.shutdown(std::net::Shutdown::Write).unwrap();
    let report = read_all(&mut upload);
    assert_eq!(report.len(), 16, "the server's report");
    assert_eq!(
        u64::from_be_bytes(report[..8].try_into().unwrap()),
        size as u64,
        "upload length"
    );
    assert_eq!(
        u64::from_be_bytes(report[8..].try_into().unwrap()),
        digest(&pattern(size, 2)),
        "upload content"
    );
    serving.join().unwrap();
}

/// An `nstat` counter of a lab namespace (absolute value, zeros included: a name nstat does
/// not know is an error, never a zero).
pub fn nstat(lab: &Lab, host: Host, name: &str) -> u64 {
    let out = xtask::cmd::stdout(&mut lab.exec(host, "nstat", ["-az", name])).unwrap();
    out.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(name)).then(|| fields.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("nstat has no counter {name}: {out}"))
}

/// The lab server's address at `port`.
pub fn server_addr(port: u16) -> SocketAddr {
    format!("{SERVER_ADDR}:{port}").parse().unwrap()
}

/// A listener in the server namespace (non-blocking: [`accept`] polls it).
pub fn listen(lab: &Lab, port: u16) -> TcpListener {
    listen_on(lab, server_addr(port))
}

/// [`listen`] on any of the server's addresses (its IPv6 one, say).
pub fn listen_on(lab: &Lab, address: SocketAddr) -> TcpListener {
    in_netns(lab, Host::Server, move || {
        let listener = TcpListener::bind(address).unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    })
}

/// The next connection, within 30 s (a test that fails must not hang).
pub fn accept(listener: &TcpListener) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("no connection reached the server: {e}"),
        }
    }
}

pub fn connect(lab: &Lab, port: u16) -> TcpStream {
    connect_to(&lab.netns(Host::Client), server_addr(port))
}

/// A connection to `server` from any namespace.
pub fn connect_to(netns: &str, server: SocketAddr) -> TcpStream {
    in_named_netns(netns, move || {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))
            .expect("connecting through the guard");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    })
}

/// Connections held open across a controller's restart or upgrade: each says a line and gets
/// it back, then waits; [`EchoSessions::finish`] later sends 1 MiB on each, one at a time,
/// and checks it comes back whole before the connection closes.
pub struct EchoSessions {
    pub clients: Vec<TcpStream>,
    server: thread::JoinHandle<usize>,
}

impl EchoSessions {
    pub fn open(lab: &Lab, port: u16, count: usize) -> EchoSessions {
        use std::io::Write;
        let listener = listen(lab, port);
        let server = thread::spawn(move || {
            let mut served = Vec::new();
            for _ in 0..count {
                let mut stream = accept(&listener);
                let mut line = [0u8; 6];
                stream.read_exact(&mut line).unwrap();
                stream.write_all(&line).unwrap();
                served.push(stream);
            }
            // Later: echo everything until the client closes, then close too.
            served
                .into_iter()
                .map(|mut stream| {
                    let mut received = Vec::new();
                    stream.read_to_end(&mut received).unwrap();
                    stream.write_all(&received).unwrap();
                    received.len()
                })
                .sum::<usize>()
        });
        let clients = (0..count)
            .map(|_| {
                let mut stream = connect(lab, port);
                stream.write_all(b"hello\n").unwrap();
                let mut line = [0u8; 6];
                stream.read_exact(&mut line).unwrap();
                assert_eq!(&line, b"hello\n");
                stream
            })
            .collect();
        EchoSessions { clients, server }
    }

    pub fn finish(mut self) {
        use std::io::Write;
        let payload = vec![7u8; 1 << 20];
        for stream in &mut self.clients {
            stream.write_all(&payload).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).unwrap();
            assert_eq!(echoed, payload);
        }
        assert_eq!(
            self.server.join().unwrap(),
            self.clients.len() * payload.len()
        );
    }
}
