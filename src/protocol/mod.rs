//! The wire contract: every JSON frame the hub reads or writes ([`frames`]),
//! the JSON a driver is shown as ([`views`]), the size of the largest batch
//! ([`limits`]), and one table of error and
//! close codes for WebSocket, HTTP and auth alike ([`codes`]).
//! `docs/PROTOCOL.md` describes the same thing for people; keep the two in step.

pub mod codes;
pub mod frames;
pub mod limits;
pub mod views;

pub use codes::{Close, ErrorCode};
pub use frames::{
    DashboardFrame, DashboardOut, DashboardRequest, DriverFrame, DriverOut, FixError, FrameError,
    MAX_SEQ, MAX_SUBSCRIPTION_ID, UploadBody, WireFix, to_json,
};
pub use views::driver_view;
