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

/// Most records taken from a ring buffer before the reader yields to the runtime: under a flood
/// the ring stays full, and a reader that drained it in one go would never let other tasks run
/// (nor bound what it buffers).
pub const MAX_BATCH: usize = 256;

/// What one batch found.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    /// The ring was emptied: wait for it to become readable again.
    Drained,
    /// [`MAX_BATCH`] records were taken and more may wait: yield, then take the next batch.
    Full,
    /// The receiver went away.
    Closed,
}

/// Takes at most [`MAX_BATCH`] records from `next` (`None`: the ring is empty; `Some(None)`: a
/// malformed record) and forwards each frame as it comes, so that at most one frame is in hand
/// and a full channel slows the reader down (the ring then fills and the datapath counts drops).
async fn forward_batch(
    mut next: impl FnMut() -> Option<Option<HeldFrame>>,
    frames: &mpsc::Sender<HeldFrame>,
) -> Batch {
    for _ in 0..MAX_BATCH {
        match next() {
            None => return Batch::Drained,
            Some(None) => warn!("malformed held-frame record skipped"),
            Some(Some(frame)) => {
                if frames.send(frame).await.is_err() {
                    return Batch::Closed;
                }
            }
        }
    }
    Batch::Full
}

/// Forwards every record to `frames`, in batches of at most [`MAX_BATCH`], until the receiver
/// goes away.
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
        // Cleared before draining: a record committed from now on (the kernel wakes the reader
        // when it has caught up) makes the ring readable again, so no wake-up is lost.
        guard.clear_ready();
        loop {
            let ring = guard.get_inner_mut();
            match forward_batch(|| ring.next().map(|r| parse_record(&r)), &frames).await {
                Batch::Drained => break,
                Batch::Full => tokio::task::yield_now().await,
                Batch::Closed => return,
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
        guard.clear_ready();
        let mut taken = 0usize;
        while let Some(record) = guard.get_inner_mut().next() {
            taken += 1;
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
            drop(record);
            if taken.is_multiple_of(MAX_BATCH) {
                tokio::task::yield_now().await;
            }
        }
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

    fn frame(n: u32) -> HeldFrame {
        HeldFrame {
            header: HeldFrameHeader {
                host_id: n,
                ..Default::default()
            },
            frame: vec![0; 64],
        }
    }

    #[tokio::test]
    async fn batches_are_bounded_and_end_when_the_ring_is_empty() {
        let (tx, mut rx) = mpsc::channel(MAX_BATCH * 4);
        let mut ring = (0..u32::try_from(MAX_BATCH).unwrap() + 10).map(|n| Some(frame(n)));
        assert_eq!(forward_batch(|| ring.next(), &tx).await, Batch::Full);
        assert_eq!(
            rx.len(),
            MAX_BATCH,
            "one batch takes exactly MAX_BATCH records"
        );
        assert_eq!(forward_batch(|| ring.next(), &tx).await, Batch::Drained);
        assert_eq!(rx.len(), MAX_BATCH + 10);
        assert_eq!(rx.recv().await.unwrap().header.host_id, 0, "in order");
        // Malformed records count towards the batch and are skipped.
        let mut bad = std::iter::repeat_with(|| None::<HeldFrame>).take(MAX_BATCH);
        assert_eq!(forward_batch(|| bad.next(), &tx).await, Batch::Full);
        drop(rx);
        let mut one = std::iter::once(Some(frame(1)));
        assert_eq!(forward_batch(|| one.next(), &tx).await, Batch::Closed);
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
