//! Fuzzes request parsing: any payload becomes a request, a legacy command or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use powchain::message::{Incoming, parse_incoming};

fuzz_target!(|data: &[u8]| {
    if let Incoming::Request(request) = parse_incoming(data) {
        // Whatever parses re-serializes and parses back the same.
        let text = serde_json::to_vec(&request).expect("serializable");
        assert_eq!(parse_incoming(&text), Incoming::Request(request));
    }
});
