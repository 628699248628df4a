//! Flow events from the data plane (validated handshakes, joins, control segments), as the
//! controller receives them, and how they print.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Value, json};
use synguard_common::{
    cookie::FlowKey,
    maps::{EarlyData, FlowEvent, NO_WINDOW_SCALE},
};

/// One record of the flow event ring buffer; the two kinds differ in size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Event(FlowEvent),
    EarlyData(Box<EarlyData>),
}

/// Decodes one ring-buffer record (None when it has neither kind's size).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    // SAFETY (both reads): right size, and every bit pattern is valid (plain integers).
    if bytes.len() == size_of::<FlowEvent>() {
        Some(Record::Event(unsafe {
            std::ptr::read_unaligned(bytes.as_ptr() as *const FlowEvent)
        }))
    } else if bytes.len() == size_of::<EarlyData>() {
        Some(Record::EarlyData(Box::new(unsafe {
            std::ptr::read_unaligned(bytes.as_ptr() as *const EarlyData)
        })))
    } else {
        None
    }
}

fn address(bytes: &[u8; 16], family: u8) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

pub fn client(flow: &FlowKey) -> SocketAddr {
    SocketAddr::new(address(&flow.client, flow.family), flow.client_port)
}

pub fn server(flow: &FlowKey) -> SocketAddr {
    SocketAddr::new(address(&flow.server, flow.family), flow.server_port)
}

/// A validated handshake, as a JSON line.
pub fn handshake_json(event: &FlowEvent) -> Value {
    let options = &event.entry.options;
    json!({
        "type": "handshake",
        "client": client(&event.flow).to_string(),
        "server": server(&event.flow).to_string(),
        "client_isn": event.entry.client_isn,
        "guard_isn": event.entry.guard_isn,
        "mss": options.mss,
        "window_scale": (options.window_scale != NO_WINDOW_SCALE).then_some(options.window_scale),
        "sack_permitted": options.sack_permitted != 0,
        "ecn": options.ecn != 0,
        "timestamps": options.timestamps != 0,
    })
}

/// A validated handshake, as a log line.
pub fn handshake_text(event: &FlowEvent) -> String {
    let options = &event.entry.options;
    let window_scale = match options.window_scale {
        NO_WINDOW_SCALE => "none".to_string(),
        shift => shift.to_string(),
    };
    format!(
        "handshake validated: {} -> {} mss {} wscale {} sack {} ecn {} timestamps {}",
        client(&event.flow),
        server(&event.flow),
        options.mss,
        window_scale,
        options.sack_permitted != 0,
        options.ecn != 0,
        options.timestamps != 0
    )
}
