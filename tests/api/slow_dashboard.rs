//! A dashboard that never reads must cost the hub a bounded amount of memory,
//! then be closed, while everyone else carries on.

use serde_json::json;

use crate::helpers::*;

const DRIVERS: u64 = 50;
const ROUNDS: u64 = 200;

#[tokio::test]
async fn a_dashboard_that_never_reads_costs_bounded_memory_and_is_closed_with_1013() {
    let app = spawn_app_with(|s| {
        s.dashboard.stuck_after_secs = 3;
        s.ws.send_buffer_bytes = 16 * 1024;
        s.trails.flush_interval_ms = 1;
        s.driver.rate_burst = 100_000;
        s.driver.rate_per_sec = 100_000;
    })
    .await;
    // The sleeper subscribes, then never reads again.
    let token = app.token(fleethub::auth::Role::Dispatcher, "sleepy", Some("acme"));
    let url = app.ws_url("/ws/dashboard", &token);
    let mut sleeper = DashboardClient {
        client: Client::connect_with_small_buffer(&url, app.port).await,
    };
    sleeper.client.next_of("hello").await;
    sleeper
        .subscribe("main", [-78.0, -13.0, -76.0, -11.0])
        .await;
    let mut reader = app.dashboard(Some("acme")).await;
    reader.subscribe("main", [-78.0, -13.0, -76.0, -11.0]).await;
    // The reader keeps up, in its own task, until the last driver's last
    // position; it stays connected after that, so that the dashboard count
    // below tells about the sleeper.
    let t = now_ms();
    let last = t + ROUNDS as i64;
    let reader = tokio::spawn(async move {
        reader
            .items_until_ts(&format!("d{}", DRIVERS - 1), last)
            .await;
        reader
    });

    let mut drivers = Vec::new();
    for i in 0..DRIVERS {
        drivers.push(app.driver(&format!("d{i}"), "acme").await);
    }
    let mut peak = 0usize;
    for round in 1..=ROUNDS {
        for (i, d) in drivers.iter_mut().enumerate() {
            let lat = -12.0 - (i as f64) * 0.001;
            d.client
                .send(&json!({"type":"pos","seq":round,"ts":t + round as i64,"lat":lat,"lon":-77.0 - round as f64 * 1e-5}))
                .await;
        }
        for d in drivers.iter_mut() {
            d.ack_covering(round).await;
        }
        peak = peak.max(app.state.subscriptions.queued_bytes());
    }
    // 10,000 updates flowed; what the hub holds for the sleeper stays about one
    // entry per driver, plus the frames handed to its socket that the kernel
    // has not taken (at most `dashboard.max_unsent_bytes`), far below 10,000
    // updates. The reader's frames count too until the kernel has taken
    // them (read every 50 ms while some are out): up to one more budget.
    let per_update = 120;
    let unsent = app.state.settings.dashboard.max_unsent_bytes;
    assert!(
        peak < (DRIVERS as usize) * per_update * 4 + 2 * unsent,
        "queued bytes peaked at {peak}"
    );
    // The reader kept up: it was never closed and saw the newest position.
    let _reader = reader.await.expect("the reader saw the last position");
    // The sleeper is closed once it stays stuck; its memory is released.
    eventually("the stuck dashboard is dropped", || async {
        app.state.subscriptions.dashboards().len() == 1
    })
    .await;
    // When it finally reads, it finds the 1013 close after what was in flight.
    assert_eq!(
        sleeper.client.ended().await,
        Ended::Closed(1013, "too slow".into())
    );
    // What its socket held stays counted until taken (or the socket is cut
    // after `dashboard.close_grace_secs`); it has been taken now.
    eventually("its queued bytes are released", || async {
        app.state.subscriptions.queued_bytes() < 10_000
    })
    .await;
}
