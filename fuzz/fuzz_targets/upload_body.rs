//! The body of `POST /api/v1/positions` as the HTTP upload reads it (any
//! bytes, not only UTF-8), then every item through `WireFix::validate`.
#![no_main]

use std::time::Duration;

use fleethub::domain::{TimeWindow, Timestamp};
use fleethub::protocol::UploadBody;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = UploadBody::parse(data) else {
        return;
    };
    let window = TimeWindow {
        max_future: Duration::from_secs(300),
        max_age: Duration::from_secs(604_800),
    };
    let now = Timestamp::from_millis(1_764_000_000_000);
    for fix in &body.items {
        let _ = fix.validate(&window, now);
    }
});
