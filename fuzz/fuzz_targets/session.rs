//! A whole server session: a plain handshake, then arbitrary bytes as the
//! chunk stream, accepting any publish request it raises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcast::rtmp::{Event, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new(SessionConfig::default(), [0; 1536]);
    let mut hello = vec![3u8; 1 + 2 * 1536];
    hello[1..1 + 1536].fill(0);
    if session.handle_input(&hello).is_err() {
        return;
    }
    for piece in data.chunks(512) {
        if session.handle_input(piece).is_err() {
            return;
        }
        while let Some(event) = session.poll_event() {
            if let Event::PublishRequest { .. } = event {
                let _ = session.accept_publish();
            }
        }
        while session.poll_transmit().is_some() {}
    }
});
