//! The load-test simulator against the real hub: a short run of the user's
//! load, checked for correctness only (no timing assertions).

use std::time::Duration;

use loadtest::scenario::{Auth, Scenario};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_simulated_drivers_lose_nothing_and_every_dashboard_ends_right() {
    let app = spawn_app().await;
    let mut scenario = Scenario::new(
        vec![format!("ws://127.0.0.1:{}", app.port)],
        Auth::Secret(SECRET.to_owned()),
    );
    scenario.drivers = 300;
    scenario.duration = Duration::from_secs(4);
    scenario.ramp_up = Duration::from_secs(1);
    scenario.dashboards = 10;
    scenario.whole_city = 1;
    scenario.churn_per_sec = 5.0;
    let report = loadtest::scenario::run(scenario)
        .await
        .expect("the run completes");
    let p = &report.positions;
    assert!(p.sent >= 300, "positions were sent: {p:?}");
    assert_eq!(p.lost, 0, "every sent position was acked: {p:?}");
    let f = &report.final_state;
    assert!(f.expected > 0, "dashboards watched drivers: {f:?}");
    assert_eq!(
        f.ts_regressions, 0,
        "no dashboard saw time go backwards: {f:?}"
    );
    assert!(
        f.pass,
        "every dashboard shows every driver's last position: {f:?}"
    );
}
