//! The control socket's protocol: a request line as any local client may send it
//! (`ops::control::parse_request`), and, on the CLI side, the agent's response line. A request
//! that parses must survive a round trip through its own encoding (the CLI and the agent agree on
//! every request), and the error answer to one that does not must encode.

#![no_main]

use imag_agent::ops::control::{Request, Response, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The socket reads a line into a String: bytes that are not UTF-8 fail before parsing.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match parse_request(line) {
        Ok(request) => {
            let text = serde_json::to_string(&request).expect("requests encode");
            assert_eq!(parse_request(&text).expect("own encoding parses"), request);
        }
        Err(err) => {
            let response = Response::Error {
                message: format!("bad request: {err}"),
            };
            let text = serde_json::to_string(&response).expect("responses encode");
            let back: Response = serde_json::from_str(&text).expect("own encoding parses");
            assert_eq!(back, response);
        }
    }
    if let Ok(response) = serde_json::from_str::<Response>(line) {
        let _ = serde_json::to_string(&response).expect("responses encode");
    }
    let _ = serde_json::from_str::<Request>(line);
});
