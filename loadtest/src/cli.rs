//! Command-line flags shared by the load generator and the peer benchmark, so
//! both describe the same city, vehicles and dashboards.

use crate::City;
use crate::dashboard::ViewportSpan;

#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// Dashboards watching a random viewport.
    #[arg(long, default_value_t = 20)]
    pub dashboards: usize,
    /// Dashboards watching the whole city.
    #[arg(long, default_value_t = 1)]
    pub whole_city: usize,
    /// How much of the city each random viewport spans per axis, as MIN-MAX
    /// fractions; wider viewports deliver each position to more dashboards.
    #[arg(long, default_value = "0.15-0.40")]
    pub viewport_span: ViewportSpan,
    /// lima, panama, paris, or west,south,east,north.
    #[arg(long, default_value = "lima", allow_hyphen_values = true)]
    pub city: City,
    /// Seeds vehicles, viewports and churn: same seed, same trips.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}
