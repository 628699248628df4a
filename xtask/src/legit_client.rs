//! The legitimate load of the flood lab: real kernel TCP connections from the client
//! namespace to the lab server at a steady rate, each one connect, `GET /`, read the whole
//! answer, close. Every attempt is recorded (when it started, whether it succeeded, its
//! connect and request latency) so the report can show what the flood did to real clients.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    lab::{Host, Lab, SERVER_ADDR, SERVER_PORT},
    stats::quantile,
};

/// How long a connect may take: Linux retransmits a SYN after 1 s and 3 s, so a connection
/// whose first SYN was lost still counts (slow); one that needed a third SYN fails.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long the request may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection within [`CONNECT_TIMEOUT`].
    ConnectTimeout,
    /// The connection was refused or reset while connecting.
    ConnectError,
    /// Connected, but the whole answer did not arrive within [`REQUEST_TIMEOUT`].
    RequestTimeout,
    /// Connected, then reset (by the server, or by a guard that lost the flow).
    RequestReset,
    /// Connected, then closed early or with another error: the answer is incomplete.
    RequestIncomplete,
}

impl Failure {
    pub const ALL: [Failure; 5] = [
        Failure::ConnectTimeout,
        Failure::ConnectError,
        Failure::RequestTimeout,
        Failure::RequestReset,
        Failure::RequestIncomplete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectError => "connect_error",
            Failure::RequestTimeout => "request_timeout",
            Failure::RequestReset => "request_reset",
            Failure::RequestIncomplete => "request_incomplete",
        }
    }

    /// What a failed request's I/O error says.
    fn of_request_error(error: &std::io::Error) -> Failure {
        use std::io::ErrorKind::*;
        match error.kind() {
            WouldBlock | TimedOut => Failure::RequestTimeout,
            ConnectionReset | ConnectionAborted | BrokenPipe => Failure::RequestReset,
            _ => Failure::RequestIncomplete,
        }
    }
}

/// One connection attempt.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// Seconds from the load's start to the attempt's start.
    pub started: f64,
    /// Milliseconds from `connect` to established, when it connected.
    pub connect_ms: Option<f64>,
    /// Milliseconds from established to the whole answer read, when it succeeded.
    pub request_ms: Option<f64>,
    pub failure: Option<Failure>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }
}

/// The load running in the background; [`Load::finish`] returns every attempt.
pub struct Load {
    scheduler: thread::JoinHandle<Result<Vec<Attempt>>>,
}

/// Starts `rate` connections per second for `duration` from the client namespace of `lab`.
/// `start` is the instant attempt times are counted from.
pub fn start(lab: &Lab, rate: u32, duration: Duration, start: Instant) -> Result<Load> {
    let netns = std::fs::File::open(format!("/run/netns/{}", lab.netns(Host::Client)))
        .context("opening the client namespace")?;
    let server = SocketAddr::new(SERVER_ADDR.parse()?, SERVER_PORT);
    let scheduler = thread::spawn(move || -> Result<Vec<Attempt>> {
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold open. Threads it
        // spawns inherit the namespace.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the client namespace");
        }
        let (sender, receiver) = mpsc::channel();
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut next = Instant::now();
        let end = next + duration;
        while next < end {
            let now = Instant::now();
            if next > now {
                thread::sleep(next - now);
            }
            let sender = sender.clone();
            let started = start.elapsed().as_secs_f64();
            thread::spawn(move || {
                let _ = sender.send(attempt(server, started));
            });
            next += interval;
        }
        drop(sender);
        Ok(receiver.iter().collect())
    });
    Ok(Load { scheduler })
}

impl Load {
    /// Waits for the last attempt and returns all of them, in start order.
    pub fn finish(self) -> Result<Vec<Attempt>> {
        let mut attempts = self
            .scheduler
            .join()
            .map_err(|_| anyhow::anyhow!("the legitimate client's scheduler panicked"))??;
        attempts.sort_by(|a, b| a.started.total_cmp(&b.started));
        Ok(attempts)
    }
}

fn attempt(server: SocketAddr, started: f64) -> Attempt {
    let failed = |failure, connect_ms| Attempt {
        started,
        connect_ms,
        request_ms: None,
        failure: Some(failure),
    };
    let connecting = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&server, CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            return failed(Failure::ConnectTimeout, None);
        }
        Err(_) => return failed(Failure::ConnectError, None),
    };
    let connect_ms = Some(connecting.elapsed().as_secs_f64() * 1e3);
    let requesting = Instant::now();
    let answered = (|| -> std::io::Result<bool> {
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer.ends_with(crate::lab_server::BODY.as_bytes()))
    })();
    match answered {
        Ok(true) if requesting.elapsed() <= REQUEST_TIMEOUT => Attempt {
            started,
            connect_ms,
            request_ms: Some(requesting.elapsed().as_secs_f64() * 1e3),
            failure: None,
        },
        Ok(true) => failed(Failure::RequestTimeout, connect_ms),
        Ok(false) => failed(Failure::RequestIncomplete, connect_ms),
        Err(error) => failed(Failure::of_request_error(&error), connect_ms),
    }
}

/// Summary of the attempts that started inside a time window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub attempts: usize,
    pub succeeded: usize,
    pub success_percent: f64,
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    pub request_p99_ms: f64,
    /// Failures by [`Failure::name`].
    pub failures: Vec<(&'static str, usize)>,
}

/// Summarises the attempts started in `[from, to)` seconds. Latencies count every attempt
/// that got that far; success needs the whole answer.
pub fn summarise(attempts: &[Attempt], from: f64, to: f64) -> Summary {
    let window: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= from && a.started < to)
        .collect();
    let succeeded = window.iter().filter(|a| a.succeeded()).count();
    let mut connect: Vec<f64> = window.iter().filter_map(|a| a.connect_ms).collect();
    let mut request: Vec<f64> = window.iter().filter_map(|a| a.request_ms).collect();
    let mut failures = Vec::new();
    for failure in Failure::ALL {
        let count = window.iter().filter(|a| a.failure == Some(failure)).count();
        if count > 0 {
            failures.push((failure.name(), count));
        }
    }
    Summary {
        attempts: window.len(),
        succeeded,
        success_percent: if window.is_empty() {
            f64::NAN
        } else {
            100.0 * succeeded as f64 / window.len() as f64
        },
        connect_p50_ms: quantile(&mut connect, 0.50),
        connect_p99_ms: quantile(&mut connect, 0.99),
        request_p99_ms: quantile(&mut request, 0.99),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(started: f64, connect_ms: f64) -> Attempt {
        Attempt {
            started,
            connect_ms: Some(connect_ms),
            request_ms: Some(2.0 * connect_ms),
            failure: None,
        }
    }

    #[test]
    fn summaries_count_only_their_window_and_name_failures() {
        let attempts = [
            ok(0.5, 1.0),
            ok(1.0, 3.0),
            Attempt {
                started: 1.5,
                connect_ms: None,
                request_ms: None,
                failure: Some(Failure::ConnectTimeout),
            },
            Attempt {
                started: 1.7,
                connect_ms: Some(5.0),
                request_ms: None,
                failure: Some(Failure::RequestReset),
            },
            ok(2.0, 100.0),
        ];
        let summary = summarise(&attempts, 1.0, 2.0);
        assert_eq!(summary.attempts, 3);
        assert_eq!(summary.succeeded, 1);
        assert!((summary.success_percent - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(summary.connect_p50_ms, 3.0);
        assert_eq!(summary.connect_p99_ms, 5.0);
        assert_eq!(summary.request_p99_ms, 6.0);
        assert_eq!(
            summary.failures,
            [("connect_timeout", 1), ("request_reset", 1)]
        );
    }
}
