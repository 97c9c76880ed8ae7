//! Input filters: whether a valid fix is worth keeping at all (exact
//! duplicates, (0, 0), poor accuracy, impossible jumps...). None is
//! configured yet; this is where they plug into the pipeline. A filtered fix
//! will be acknowledged (the app must not resend it) but neither shown nor stored.

use crate::domain::Position;
use crate::live::LiveDriver;

/// What the filters decided about one fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Dropped, with the reason it is counted under.
    Drop(&'static str),
}

/// The configured input filters.
#[derive(Debug, Default)]
pub struct InputFilters {}

impl InputFilters {
    /// Judges `position`, the next fix of `driver`.
    pub fn check(&self, _driver: &LiveDriver, _position: &Position) -> Verdict {
        Verdict::Keep
    }
}
