//! Flow events from the data plane (validated handshakes, joins, control segments), as the
//! controller receives them, and how they print.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Value, json};
use synguard_common::{
    cookie::FlowKey,
    maps::{EarlyData, EventKind, FlowEvent, NO_WINDOW_SCALE, TO_CLIENT, TO_SERVER, record_tag},
};

/// One record of the flow event ring buffer, decoded: told apart by its tag, with its kind
/// and direction as enums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    EarlyData(Box<EarlyData>),
}

/// Which way a segment went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// A flow event with its kind and direction decoded; `wire` holds its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub direction: Direction,
    pub wire: FlowEvent,
}

impl Event {
    /// `None` for a kind or direction the data plane does not write.
    pub fn decode(wire: &FlowEvent) -> Option<Self> {
        Some(Self {
            kind: EventKind::from_wire(wire.kind)?,
            direction: match wire.direction {
                TO_SERVER => Direction::ToServer,
                TO_CLIENT => Direction::ToClient,
                _ => return None,
            },
            wire: *wire,
        })
    }
}

/// Decodes one ring-buffer record (`None`: an unknown tag, a size that is not its tag's, or
/// an event of an unknown kind or direction).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    match *bytes.first()? {
        record_tag::FLOW_EVENT if bytes.len() == size_of::<FlowEvent>() => {
            // SAFETY: the right size, and every bit pattern is valid (plain integers).
            let wire = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const FlowEvent) };
            Event::decode(&wire).map(Record::Event)
        }
        record_tag::EARLY_DATA if bytes.len() == size_of::<EarlyData>() => {
            // SAFETY: as above.
            Some(Record::EarlyData(Box::new(unsafe {
                std::ptr::read_unaligned(bytes.as_ptr() as *const EarlyData)
            })))
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reads the plain integers of a repr(C) value.
        unsafe { std::slice::from_raw_parts(value as *const T as *const u8, size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn records_decode_by_their_tag_into_typed_kinds() {
        let wire = FlowEvent {
            tag: record_tag::FLOW_EVENT,
            kind: EventKind::FinAcked as u8,
            direction: TO_CLIENT,
            seq: 7,
            ..FlowEvent::default()
        };
        let Some(Record::Event(event)) = decode(&bytes_of(&wire)) else {
            panic!("a flow event");
        };
        assert_eq!(
            (event.kind, event.direction, event.wire.seq),
            (EventKind::FinAcked, Direction::ToClient, 7)
        );
        let mut data = EarlyData {
            tag: record_tag::EARLY_DATA,
            _pad: [0; 3],
            flow: FlowKey::default(),
            client_isn: 1,
            guard_isn: 2,
            seq: 3,
            ts_val: 0,
            ts_ecr: 0,
            window: 0,
            len: 1,
            payload: [0; synguard_common::maps::EARLY_DATA_MAX],
        };
        assert!(matches!(decode(&bytes_of(&data)), Some(Record::EarlyData(held)) if held.seq == 3));
        // A tag that does not match the size, an unknown tag, kind or direction: not decoded.
        data.tag = record_tag::FLOW_EVENT;
        assert_eq!(decode(&bytes_of(&data)), None);
        for broken in [
            FlowEvent { tag: 9, ..wire },
            FlowEvent { kind: 0, ..wire },
            FlowEvent { kind: 7, ..wire },
            FlowEvent {
                direction: 2,
                ..wire
            },
        ] {
            assert_eq!(decode(&bytes_of(&broken)), None, "{broken:?}");
        }
        assert_eq!(decode(&[]), None);
    }
}
