//! The lab's protected service: a small HTTP/1.1 server on real kernel TCP sockets.
//! `GET /` answers [`BODY`]; `GET /bytes/N` answers N bytes (for transfer tests).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use anyhow::{Context, Result};

pub const BODY: &str = "synguard lab: hello from the server\n";
const MAX_REQUEST: usize = 8192;

/// Serves on every address of `addrs` until killed.
pub fn serve(addrs: &[String]) -> Result<()> {
    let listeners = addrs
        .iter()
        .map(|addr| TcpListener::bind(addr).with_context(|| format!("binding {addr}")))
        .collect::<Result<Vec<_>>>()?;
    let serving: Vec<_> = listeners
        .into_iter()
        .map(|listener| std::thread::spawn(move || accept_forever(listener)))
        .collect();
    for listener in serving {
        listener
            .join()
            .map_err(|_| anyhow::anyhow!("a listener thread panicked"))??;
    }
    Ok(())
}

fn accept_forever(listener: TcpListener) -> Result<()> {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(error) = answer(stream) {
                        eprintln!("lab server: {error:#}");
                    }
                });
            }
            Err(error) => eprintln!("lab server: accept: {error}"),
        }
    }
    Ok(())
}

fn answer(mut stream: TcpStream) -> Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let body: Vec<u8> = match path.strip_prefix("/bytes/").map(str::parse::<usize>) {
        Some(Ok(n)) => (0..n).map(|i| b'a' + (i % 26) as u8).collect(),
        _ => BODY.as_bytes().to_vec(),
    };
    // One write, as HTTP servers do (writev): written piece by piece, Nagle holds every piece
    // after the first until the client acknowledges it, and a lost ACK then costs the
    // response a retransmission timeout.
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    stream.write_all(&response)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn answers_the_body_and_sized_payloads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || accept_forever(listener));
        let answer = get(addr, "/");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(BODY));
        let answer = get(addr, "/bytes/1000");
        assert!(answer.contains("Content-Length: 1000\r\n"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.len(), 1000);
        assert!(body.starts_with("abcdefghijklmnopqrstuvwxyza"));
    }
}
