//! What a dashboard is shown when it subscribes (and again after the
//! cluster link comes back), and what `GET /api/v1/drivers` lists: this
//! node's drivers and the other nodes', the newest state of each.

use std::collections::HashMap;

use super::{DashboardEntry, DriverRow, LiveDrivers};
use crate::auth::FleetScope;
use crate::cluster::ClusterBus;
use crate::dashboards::outbox::Control;
use crate::domain::{BBox, DriverKey};
use crate::protocol::{DashboardOut, to_json};

/// Every driver in `scope` inside `bbox`, cluster-wide, newest first. A
/// driver known both here and from another node (it moved) shows its newest state.
pub async fn rows(
    drivers: &LiveDrivers,
    bus: &dyn ClusterBus,
    scope: &FleetScope,
    bbox: &BBox,
) -> Vec<DriverRow> {
    let local = drivers.in_box(scope, bbox);
    let remote = bus.remote_rows(scope, bbox).await;
    let mut newest: HashMap<DriverKey, DriverRow> =
        HashMap::with_capacity(local.len() + remote.len());
    for row in local.into_iter().chain(remote) {
        match newest.get(&row.update.key) {
            Some(known) if !newer(&row, known) => {}
            _ => {
                newest.insert(row.update.key.clone(), row);
            }
        }
    }
    let mut rows: Vec<DriverRow> = newest.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.position.ts()));
    rows
}

/// A later fix wins; for the same fix, the newer owner (a driver that just moved).
fn newer(row: &DriverRow, than: &DriverRow) -> bool {
    (row.position.ts(), row.update.epoch) > (than.position.ts(), than.update.epoch)
}

/// Queues the `snapshot` frame of subscription `id`. Returns false when the
/// dashboard's control queue is full (it is being closed).
pub fn send(dash: &DashboardEntry, id: &str, rows: Vec<DriverRow>) -> bool {
    let views: Vec<_> = rows.iter().map(|r| r.view(false)).collect();
    let frame = to_json(&DashboardOut::Snapshot {
        id,
        drivers: views.iter().map(|v| v.as_ref()).collect(),
    });
    dash.outbox.push_control(Control::Text(frame))
}
