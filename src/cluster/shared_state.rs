//! The drivers' last-known state shared by every node, in Redis: per fleet a
//! geospatial index of last positions (GEOADD / GEOSEARCH BYBOX), a hash of
//! driver records and a sorted set by last-seen time for expiry. Written in
//! the same pipeline as the positions a node publishes (never a round trip
//! per position); read for snapshots and `GET /api/v1/drivers`.

use std::collections::HashMap;
use std::sync::Arc;

use redis::{Pipeline, RedisResult, cmd};

use super::channels::Channels;
use super::link::Conn;
use super::nodes::Nodes;
use super::wire::{RecordIn, RecordOut, parse_view};
use crate::domain::{BBox, FleetId, Timestamp};
use crate::live::{DriverRow, LiveUpdate};

/// Redis's geospatial index stops short of the poles.
const GEO_MAX_LAT: f64 = 85.05;
/// Drivers removed per fleet and expiry pass.
const EXPIRE_BATCH: isize = 1000;
/// A box wider than this (degrees of longitude) is read whole.
const WIDEST_GEO_BOX: f64 = 90.0;

/// One driver's state to write, as its owner knows it.
pub struct StateWrite<'a> {
    pub update: &'a LiveUpdate,
    pub online: bool,
}

/// Adds the writes of `entries` to `pipe` (run for its effects), grouped by fleet.
pub fn write(
    pipe: &mut Pipeline,
    channels: &Channels,
    node: &str,
    incarnation: u64,
    entries: &[StateWrite<'_>],
) {
    let now = Timestamp::now().as_millis();
    let mut by_fleet: HashMap<&FleetId, Vec<&StateWrite<'_>>> = HashMap::new();
    for entry in entries {
        by_fleet
            .entry(entry.update.key.fleet())
            .or_default()
            .push(entry);
    }
    for (fleet, entries) in by_fleet {
        let mut geo = cmd("GEOADD");
        geo.arg(channels.geo_key(fleet));
        let mut records = cmd("HSET");
        records.arg(channels.drivers_key(fleet));
        let mut seen = cmd("ZADD");
        seen.arg(channels.seen_key(fleet));
        for entry in entries {
            let update = entry.update;
            let driver = update.key.driver().as_str();
            let lat = update.lat.clamp(-GEO_MAX_LAT, GEO_MAX_LAT);
            geo.arg(update.lon).arg(lat).arg(driver);
            let record = RecordOut {
                p: &update.json,
                on: entry.online,
                n: node,
                i: incarnation,
                e: update.epoch,
                s: now,
            };
            let record = serde_json::to_string(&record).unwrap_or_default();
            records.arg(driver).arg(record);
            seen.arg(now).arg(driver);
        }
        pipe.add_command(geo);
        pipe.add_command(records);
        pipe.add_command(seen);
        pipe.cmd("HSET")
            .arg(channels.fleets_key())
            .arg(fleet.as_str())
            .arg(now);
    }
}

/// The last known state of every driver of `fleets` inside `bbox`, seen
/// since `since`. A driver whose owning node is gone shows offline.
pub async fn read(
    conn: &mut Conn,
    channels: &Channels,
    nodes: &Nodes,
    fleets: &[FleetId],
    bbox: &BBox,
    since: Timestamp,
) -> RedisResult<Vec<DriverRow>> {
    if fleets.is_empty() {
        return Ok(Vec::new());
    }
    // The heartbeats first: a node that started a moment ago is known alive.
    let beats: HashMap<String, String> = conn
        .cmd(redis::cmd("HGETALL").arg(channels.nodes_key()))
        .await?;
    nodes.observe(&beats);
    let whole = bbox.crosses_antimeridian() || bbox.east() - bbox.west() > WIDEST_GEO_BOX;
    let mut pipe = redis::pipe();
    for fleet in fleets {
        if whole {
            pipe.cmd("HVALS").arg(channels.drivers_key(fleet));
        } else {
            pipe.add_command(geosearch(channels, fleet, bbox));
        }
    }
    let found: Vec<Vec<String>> = conn.query(&pipe).await?;
    let records: Vec<Vec<Option<String>>> = if whole {
        found
            .into_iter()
            .map(|r| r.into_iter().map(Some).collect())
            .collect()
    } else {
        let mut pipe = redis::pipe();
        for (fleet, members) in fleets.iter().zip(&found) {
            if members.is_empty() {
                pipe.cmd("ECHO").arg("none");
            } else {
                pipe.cmd("HMGET")
                    .arg(channels.drivers_key(fleet))
                    .arg(members);
            }
        }
        let raw: Vec<redis::Value> = conn.query(&pipe).await?;
        raw.into_iter()
            .map(|v| redis::from_redis_value::<Vec<Option<String>>>(v).unwrap_or_default())
            .collect()
    };
    let rows = records
        .iter()
        .flatten()
        .flatten()
        .filter_map(|record| row(record, nodes))
        .filter(|r| r.last_seen.is_some_and(|s| s >= since))
        .filter(|r| bbox.contains(r.position.lat(), r.position.lon()))
        .filter(|r| fleets.contains(r.update.key.fleet()))
        .collect();
    Ok(rows)
}

/// GEOSEARCH over a box a little larger than `bbox` (its width taken where
/// the box is widest); the caller keeps the exact box.
fn geosearch(channels: &Channels, fleet: &FleetId, bbox: &BBox) -> redis::Cmd {
    let (lat_c, lon_c) = (
        (bbox.south() + bbox.north()) / 2.0,
        (bbox.west() + bbox.east()) / 2.0,
    );
    let widest_lat = if bbox.south() <= 0.0 && bbox.north() >= 0.0 {
        0.0
    } else {
        bbox.south().abs().min(bbox.north().abs())
    };
    let km_per_deg = 111.32;
    let width = (bbox.east() - bbox.west()) * km_per_deg * widest_lat.to_radians().cos();
    let height = (bbox.north() - bbox.south()) * km_per_deg;
    let mut c = cmd("GEOSEARCH");
    c.arg(channels.geo_key(fleet))
        .arg("FROMLONLAT")
        .arg(lon_c)
        .arg(lat_c.clamp(-GEO_MAX_LAT, GEO_MAX_LAT))
        .arg("BYBOX")
        .arg(width * 1.02 + 1.0)
        .arg(height * 1.02 + 1.0)
        .arg("km");
    c
}

fn row(record: &str, nodes: &Nodes) -> Option<DriverRow> {
    let record: RecordIn = serde_json::from_str(record).ok()?;
    let (key, position) = parse_view(record.p)?;
    let update = LiveUpdate::from_view(key, &position, record.p.to_owned(), record.e);
    Some(DriverRow {
        update: Arc::new(update),
        position,
        online: record.on && nodes.alive(record.n, record.i),
        last_seen: Some(Timestamp::from_millis(record.s)),
    })
}

/// Forgets the drivers of `fleets` not seen since `before`; returns how many.
pub async fn expire(
    conn: &mut Conn,
    channels: &Channels,
    fleets: &[FleetId],
    before: Timestamp,
) -> RedisResult<usize> {
    if fleets.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for fleet in fleets {
        pipe.cmd("ZRANGEBYSCORE")
            .arg(channels.seen_key(fleet))
            .arg("-inf")
            .arg(before.as_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(EXPIRE_BATCH);
    }
    let stale: Vec<Vec<String>> = conn.query(&pipe).await?;
    let mut pipe = redis::pipe();
    let mut count = 0;
    for (fleet, drivers) in fleets.iter().zip(&stale) {
        if drivers.is_empty() {
            continue;
        }
        count += drivers.len();
        pipe.cmd("ZREM").arg(channels.seen_key(fleet)).arg(drivers);
        pipe.cmd("ZREM").arg(channels.geo_key(fleet)).arg(drivers);
        pipe.cmd("HDEL")
            .arg(channels.drivers_key(fleet))
            .arg(drivers);
    }
    if count > 0 {
        conn.exec(&pipe).await?;
    }
    Ok(count)
}
