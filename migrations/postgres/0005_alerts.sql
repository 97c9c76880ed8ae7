-- Alerts (issue #14): per-fleet rules, each driver's evaluation state, the
-- events produced, and the webhooks they are sent to through an outbox.
-- Times are milliseconds since the Unix epoch, like every other table.

-- One row per fleet that has rules; a null column is a rule turned off.
CREATE TABLE alert_rules (
    fleet_id           text             PRIMARY KEY,
    overspeed_kmh      double precision,
    overspeed_min_secs bigint,
    idle_after_secs    bigint,
    offline_after_secs bigint,
    low_battery_pct    double precision,
    updated_at         bigint           NOT NULL
);

-- Where each driver's evaluation stands: the newest fix evaluated (later
-- fixes only are evaluated: a late one produces nothing), when the hub last
-- heard from it (for `offline`), the fix time `offline` was last raised for,
-- and the rest of the state (fences inside, open episodes) as JSON. Written
-- in the same transaction as the fixes it follows, under a row lock, so two
-- nodes never evaluate one driver from the same state.
CREATE TABLE alert_state (
    fleet_id   text             NOT NULL,
    driver_id  text             NOT NULL,
    last_ts    bigint           NOT NULL,
    last_seq   bigint           NOT NULL,
    last_lat   double precision NOT NULL,
    last_lon   double precision NOT NULL,
    last_recv  bigint           NOT NULL,
    offline_ts bigint           NOT NULL DEFAULT -1,
    state      text             NOT NULL,
    PRIMARY KEY (fleet_id, driver_id)
);

-- Serves the offline sweep: drivers not heard from since a cutoff.
CREATE INDEX alert_state_recv ON alert_state (last_recv);

-- Every event, with the fix that caused it. The id is derived from what
-- caused the event (fleet, driver, kind, fence, fix), so producing it twice
-- (a resend, two nodes, a retried commit) stores it once: whoever inserted
-- the row is the one who announces it.
CREATE TABLE events (
    id          text             PRIMARY KEY,
    fleet_id    text             NOT NULL,
    driver_id   text             NOT NULL,
    kind        text             NOT NULL,
    ts          bigint           NOT NULL,
    seq         bigint,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    geofence_id text,
    details     text             NOT NULL,
    created_at  bigint           NOT NULL
);

CREATE INDEX events_fleet_ts ON events (fleet_id, ts);
CREATE INDEX events_ts ON events (ts);

-- Webhooks of a fleet. `kinds` is the comma-wrapped list of event kinds sent
-- (",sos,geofence_enter,"), or empty for all. The secret signs deliveries; it
-- is shown once, when the webhook is created.
CREATE TABLE webhooks (
    id         text   PRIMARY KEY,
    fleet_id   text   NOT NULL,
    url        text   NOT NULL,
    secret     text   NOT NULL,
    kinds      text   NOT NULL,
    created_at bigint NOT NULL
);

CREATE INDEX webhooks_fleet ON webhooks (fleet_id);

-- The outbox: one row per (webhook, event), written in the transaction that
-- stored the event. `status` is pending, delivered or dead; a pending row is
-- due at `next_at`, and a node sending it holds it until `lease_until`.
CREATE TABLE webhook_deliveries (
    id           text   PRIMARY KEY,
    webhook_id   text   NOT NULL,
    event_id     text   NOT NULL,
    fleet_id     text   NOT NULL,
    status       text   NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_at      bigint NOT NULL,
    lease_until  bigint NOT NULL DEFAULT 0,
    last_error   text,
    created_at   bigint NOT NULL,
    delivered_at bigint,
    UNIQUE (webhook_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
