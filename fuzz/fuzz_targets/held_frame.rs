//! A held frame, from the ring buffer record to what the agent sends back: the record parser
//! (`datapath::ring::parse_record`), the frame summary, checksum completion before re-delivery,
//! and the refusal built for a host that cannot wake. The input is tried both as a whole ring
//! record (header + frame) and as a bare frame, so that seeds of either kind reach every parser.
//!
//! Beyond "no panic": completing a checksum keeps the frame's length and is idempotent, and a
//! refusal is itself a frame the agent can read but would never answer (no refusal of a refusal).

#![no_main]

use imag_agent::{datapath::ring::parse_record, packets};
use imag_common::HELD_FRAME_HEADER_LEN;
use libfuzzer_sys::fuzz_target;

fn frame(frame: &[u8]) {
    if let Ok(summary) = packets::summarize(frame) {
        let _ = summary.to_string();
    }

    let mut completed = frame.to_vec();
    if packets::complete_checksum(&mut completed).is_ok() {
        assert_eq!(
            completed.len(),
            frame.len(),
            "checksum completion resized the frame"
        );
        let mut again = completed.clone();
        packets::complete_checksum(&mut again).expect("a completed frame still parses");
        assert_eq!(again, completed, "checksum completion is not idempotent");
        assert_eq!(
            packets::summarize(&completed).ok(),
            packets::summarize(frame).ok(),
            "checksum completion changed what the frame says"
        );
    }

    if let Some(answer) = packets::refusal(frame) {
        packets::summarize(&answer).expect("the agent cannot read its own refusal");
        assert_eq!(
            packets::refusal(&answer),
            None,
            "a refusal would itself be refused: two agents could answer each other forever"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(held) = parse_record(data) {
        assert_eq!(held.frame.len(), held.header.frame_len as usize);
        assert_eq!(
            &data[HELD_FRAME_HEADER_LEN..HELD_FRAME_HEADER_LEN + held.frame.len()],
            held.frame.as_slice()
        );
        frame(&held.frame);
    }
    frame(data);
});
