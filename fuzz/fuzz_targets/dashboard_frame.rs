//! A dashboard's text frame as the dashboard session reads it: decoded, then
//! checked into a subscribe or unsubscribe request.
#![no_main]

use fleethub::protocol::DashboardFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = DashboardFrame::decode(text) {
        let _ = frame.request();
    }
});
