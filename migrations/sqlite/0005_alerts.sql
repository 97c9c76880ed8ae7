-- Alerts: the same logical schema as PostgreSQL (see
-- migrations/postgres/0005_alerts.sql for the why of each table).

CREATE TABLE alert_rules (
    fleet_id           TEXT PRIMARY KEY,
    overspeed_kmh      REAL,
    overspeed_min_secs INTEGER,
    idle_after_secs    INTEGER,
    offline_after_secs INTEGER,
    low_battery_pct    REAL,
    updated_at         INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE alert_state (
    fleet_id   TEXT NOT NULL,
    driver_id  TEXT NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    last_lat   REAL NOT NULL,
    last_lon   REAL NOT NULL,
    last_recv  INTEGER NOT NULL,
    offline_ts INTEGER NOT NULL DEFAULT -1,
    state      TEXT NOT NULL,
    PRIMARY KEY (fleet_id, driver_id)
) WITHOUT ROWID;

CREATE INDEX alert_state_recv ON alert_state (last_recv);

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    fleet_id    TEXT NOT NULL,
    driver_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    seq         INTEGER,
    lat         REAL NOT NULL,
    lon         REAL NOT NULL,
    geofence_id TEXT,
    details     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX events_fleet_ts ON events (fleet_id, ts);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    fleet_id   TEXT NOT NULL,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    kinds      TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX webhooks_fleet ON webhooks (fleet_id);

CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    webhook_id   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    fleet_id     TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    UNIQUE (webhook_id, event_id)
) WITHOUT ROWID;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
