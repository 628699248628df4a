//! The lab's protected service: a small HTTP/1.1 server on real kernel TCP sockets.
//! `GET /` answers [`BODY`]; `GET /bytes/N` answers N bytes (for transfer tests).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use anyhow::{Context, Result};

pub const BODY: &str = "synguard lab: hello from the server\n";
const MAX_REQUEST: usize = 8192;

pub fn serve(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
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
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()?;
    Ok(())
}
