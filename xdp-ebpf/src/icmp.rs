//! ICMP and ICMPv6 errors about validated flows (see `synguard_common::icmp`): matched to the
//! flow through the quoted segment, checked against what its sender has in flight, the quote
//! turned back into the sender's numbers (checksums fixed), and passed to the kernel, which
//! routes the error on. Errors quoting a protected service's segment of no flow drop.

use aya_ebpf::programs::XdpContext;
use synguard_common::{
    checksum,
    cookie::FlowKey,
    counters::Counter,
    field::{be16, icmp, tcp},
    frame::FrameBytes,
    icmp::{locate_quote, quote_in_flight},
    maps::{TO_CLIENT, TO_SERVER},
    parse::{ParseScratch, TcpSegment, TransportKind},
    tcp_options::TcpOptions,
    translate::{shift_word, translate_header},
    verdict::{Action, Verdict, pass_ip},
};

use crate::{FLOWS, Guarded, frame::XdpFrame, mapped, service_slot};

/// Relays the ICMP error in `guarded` (it came in from the clients' side when `from_client`).
#[inline(always)]
pub fn relay(
    ctx: &XdpContext,
    guarded: &Guarded,
    scratch: &mut ParseScratch,
    from_client: bool,
) -> Verdict {
    let frame = XdpFrame(ctx);
    let Some(quote) = locate_quote(
        &frame,
        guarded.l4_offset as usize,
        guarded.ip_end as usize,
        guarded.addrs.family,
    ) else {
        return pass_ip(TransportKind::Other);
    };
    let ports = TcpSegment {
        src_port: quote.src_port,
        dst_port: quote.dst_port,
        ..TcpSegment::default()
    };
    // The quoted segment went the other way: an error from the clients' side quotes what the
    // server sent, one from the server's side what a client sent.
    let (flow, quoted_direction) = if from_client {
        (
            FlowKey::from_server_segment(&quote.addrs, &ports),
            TO_CLIENT,
        )
    } else {
        (
            FlowKey::from_client_segment(&quote.addrs, &ports),
            TO_SERVER,
        )
    };
    let Some(entry) = FLOWS.get_ptr(&flow) else {
        let server = mapped(&quote.addrs, from_client);
        return if service_slot(&server, flow.server_port) != 0 {
            Verdict::new(Action::Drop, Counter::DropIcmpNoFlow)
        } else {
            pass_ip(TransportKind::Other)
        };
    };
    // SAFETY: a live map value; the LRU may recycle it only after this program returns.
    let entry = unsafe { &*entry };
    let undo = entry.translation(quoted_direction).inverse();
    let (sender, receiver) = if from_client {
        (&entry.to_client, &entry.to_server)
    } else {
        (&entry.to_server, &entry.to_client)
    };
    if !quote_in_flight(
        quote.seq.wrapping_add(undo.seq),
        sender.next_seq,
        receiver.window,
    ) {
        return Verdict::new(Action::Drop, Counter::DropIcmpOutOfWindow);
    }
    let at = quote.tcp_offset as usize;
    let adjust = if quote.tcp_len as usize >= tcp::MIN_HEADER_LEN {
        let walker = &mut scratch.walker;
        walker.reset();
        let copy = if quote.tcp_len as usize > tcp::MAX_HEADER_LEN {
            tcp::MAX_HEADER_LEN
        } else {
            quote.tcp_len as usize
        };
        if !frame.load_tcp_header(at, copy, &mut walker.header) {
            return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
        }
        let header_len = (walker.header[tcp::DATA_OFFSET] >> 4) as usize * 4;
        // Options only when the quote holds them all; a cut header keeps its fixed fields.
        let options = if header_len >= tcp::MIN_HEADER_LEN && header_len <= copy {
            walker.set_header_len(header_len);
            walker.walk();
            walker.finish().unwrap_or_default()
        } else {
            TcpOptions::default()
        };
        let adjust = translate_header(&mut walker.header, &options, &undo);
        if !frame.store_tcp_header(at, &walker.header, copy) {
            return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
        }
        adjust
    } else {
        // RFC 792's minimum: ports and sequence number only.
        let Some(mut first) = frame.load::<8>(at) else {
            return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
        };
        if undo.seq == 0 {
            0
        } else {
            let adjust = shift_word(&mut first, tcp::SEQ, undo.seq);
            if !frame.store_small(at, &first) {
                return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
            }
            adjust
        }
    };
    if adjust != 0 {
        // The ICMP checksum covers the quote (and for ICMPv6 a pseudo-header nothing here
        // changes): the same adjustment fixes it (RFC 1624).
        let at = guarded.l4_offset as usize + icmp::CHECKSUM;
        let Some(old) = frame.load::<2>(at) else {
            return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
        };
        let updated = checksum::finish((!be16(&old, 0)) as u64 + adjust);
        if !frame.store_small(at, &updated.to_be_bytes()) {
            return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
        }
    }
    Verdict::new(Action::Pass, Counter::IcmpTranslated)
}
