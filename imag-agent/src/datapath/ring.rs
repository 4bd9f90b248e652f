//! Reads held frames from the `HELD_FRAMES` ring buffer and hands them to the orchestrator.

use aya::maps::{MapData, RingBuf};
use imag_common::{HELD_FRAME_HEADER_LEN, HeldFrameHeader};
use tokio::sync::mpsc;
use tracing::{error, warn};

/// One frame the datapath held, as the agent keeps it until re-delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldFrame {
    pub header: HeldFrameHeader,
    pub frame: Vec<u8>,
}

/// Splits a ring buffer record into its header and frame; `None` for a malformed record.
pub fn parse_record(record: &[u8]) -> Option<HeldFrame> {
    if record.len() < HELD_FRAME_HEADER_LEN {
        return None;
    }
    // SAFETY: HeldFrameHeader is plain old data and the slice is long enough;
    // read_unaligned copes with the record's alignment.
    let header: HeldFrameHeader =
        unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<HeldFrameHeader>()) };
    let frame =
        record.get(HELD_FRAME_HEADER_LEN..HELD_FRAME_HEADER_LEN + header.frame_len as usize)?;
    Some(HeldFrame {
        header,
        frame: frame.to_vec(),
    })
}

/// Forwards every record to `frames` until the receiver goes away.
pub async fn forward_held_frames(ring: RingBuf<MapData>, frames: mpsc::Sender<HeldFrame>) {
    let mut ring = match super::poll_readable(ring) {
        Ok(fd) => fd,
        Err(err) => {
            error!(error = %err, "cannot poll the held-frames ring buffer; no host can wake");
            return;
        }
    };
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(err) => {
                error!(error = %err, "polling the held-frames ring buffer failed");
                return;
            }
        };
        let mut batch = Vec::new();
        while let Some(record) = guard.get_inner_mut().next() {
            if let Some(frame) = parse_record(&record) {
                batch.push(frame);
            } else {
                warn!(len = record.len(), "malformed held-frame record skipped");
            }
        }
        guard.clear_ready();
        for frame in batch {
            if frames.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// Forwards the ports of LISTEN events from the `SOCK_EVENTS` ring buffer to every wake waiting
/// for readiness.
pub async fn forward_listen_events(
    ring: RingBuf<MapData>,
    ports: tokio::sync::broadcast::Sender<u16>,
) {
    let mut ring = match super::poll_readable(ring) {
        Ok(fd) => fd,
        Err(err) => {
            warn!(error = %err, "cannot poll socket events; readiness falls back to polling");
            return;
        }
    };
    loop {
        let Ok(mut guard) = ring.readable_mut().await else {
            return;
        };
        while let Some(record) = guard.get_inner_mut().next() {
            if record.len() >= std::mem::size_of::<imag_common::SockEvent>() {
                // SAFETY: plain old data, length checked.
                let event: imag_common::SockEvent =
                    unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
                // The kernel side widens a u16 port to u32 (fixed-width map values).
                if event.kind == imag_common::SOCK_EVENT_LISTEN
                    && let Ok(port) = u16::try_from(event.port)
                {
                    let _ = ports.send(port);
                }
            }
        }
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(header: HeldFrameHeader, frame: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; HELD_FRAME_HEADER_LEN];
        // SAFETY: plain old data into a buffer of its size.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<HeldFrameHeader>(), header) };
        bytes.extend_from_slice(frame);
        bytes
    }

    #[test]
    fn record_round_trips() {
        let header = HeldFrameHeader {
            held_at_ns: 42,
            ifindex: 7,
            frame_len: 3,
            host_addr: 0x0a4d_000a,
            host_id: 1,
        };
        let parsed = parse_record(&record(header, &[1, 2, 3])).unwrap();
        assert_eq!(parsed.header, header);
        assert_eq!(parsed.frame, vec![1, 2, 3]);
    }

    #[test]
    fn short_or_lying_records_are_rejected() {
        assert_eq!(parse_record(&[0u8; 4]), None);
        let header = HeldFrameHeader {
            frame_len: 100,
            ..Default::default()
        };
        assert_eq!(parse_record(&record(header, &[1, 2, 3])), None);
    }
}
