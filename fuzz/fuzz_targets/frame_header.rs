//! Any bytes a client sends: cut frames, parse headers, run them through a logged-on session.
//! Nothing may panic, and every header that parses must report a payload offset inside the frame.
#![no_main]

use tachyon_core::protocol::{cut_frame, parse_header, FRAME_LENGTH_BYTES};
use tachyon_core::session::{Session, SessionLimits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut session = Session::new(SessionLimits { subscriptions_max: 64, ..SessionLimits::default() });
    let logon = br#"{"c":"logon","cid":"1","client_name":"fuzz"}"#;
    session.handle(&parse_header(logon).unwrap()).unwrap();
    let mut rest = data;
    while let Ok(Some(length)) = cut_frame(rest, 1 << 16) {
        let message = &rest[FRAME_LENGTH_BYTES..FRAME_LENGTH_BYTES + length];
        if let Ok(header) = parse_header(message) {
            assert!(header.payload_offset <= message.len());
            let _ = session.handle(&header);
        }
        rest = &rest[FRAME_LENGTH_BYTES + length..];
    }
    // The same bytes as one unframed message, so short inputs exercise the header parser too.
    if let Ok(header) = parse_header(data) {
        assert!(header.payload_offset <= data.len());
        let _ = session.handle(&header);
    }
});
