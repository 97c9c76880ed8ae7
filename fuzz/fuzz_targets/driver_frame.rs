//! A driver's text frame as the driver session reads it: JSON into a
//! `DriverFrame`, then every fix it carries through `WireFix::validate`.
#![no_main]

use std::time::Duration;

use fleethub::domain::{TimeWindow, Timestamp};
use fleethub::protocol::DriverFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer hands the session only UTF-8 text (else 1007).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = serde_json::from_str::<DriverFrame>(text) else {
        return;
    };
    let window = TimeWindow {
        max_future: Duration::from_secs(300),
        max_age: Duration::from_secs(604_800),
    };
    let now = Timestamp::from_millis(1_764_000_000_000);
    let _ = frame.fix().validate(&window, now);
    for fix in frame.items.iter().flatten() {
        let _ = fix.validate(&window, now);
    }
});
