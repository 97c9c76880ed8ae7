-- A driver's identity is its fleet and its id: fleets choose their drivers'
-- ids on their own, so two fleets may each have a `d1`. Until now `drivers`
-- was keyed by driver_id alone (two such drivers shared one record: one
-- `last_seq`, one fleet) and `positions` deduplicated on (driver_id, ts, seq)
-- (one fleet's fix could be skipped as a "duplicate" of the other's). Both
-- keys now lead with fleet_id, the order every read names a driver in.
--
-- SQLite cannot change a primary key in place: each table is rebuilt under
-- its new key and every row copied over, with its fleet_id (the old keys
-- were unique, so the wider new ones are too).

CREATE TABLE positions_by_fleet (
    driver_id TEXT    NOT NULL,
    fleet_id  TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    lat       REAL    NOT NULL,
    lon       REAL    NOT NULL,
    speed     REAL,
    heading   REAL,
    acc       REAL,
    -- Clustered on the dedup key, which is also "one driver of one fleet, a time range".
    PRIMARY KEY (fleet_id, driver_id, ts, seq)
) WITHOUT ROWID;

INSERT INTO positions_by_fleet (driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc)
SELECT driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc FROM positions;

DROP TABLE positions;
ALTER TABLE positions_by_fleet RENAME TO positions;

-- Serves retention's "everything older than".
CREATE INDEX positions_ts ON positions (ts);

CREATE TABLE drivers_by_fleet (
    driver_id  TEXT    NOT NULL,
    fleet_id   TEXT    NOT NULL,
    last_seq   INTEGER NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_lat   REAL    NOT NULL,
    last_lon   REAL    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (fleet_id, driver_id)
) WITHOUT ROWID;

INSERT INTO drivers_by_fleet
    (driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon, updated_at)
SELECT driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon, updated_at FROM drivers;

DROP TABLE drivers;
ALTER TABLE drivers_by_fleet RENAME TO drivers;

-- Records of ids that more than one fleet used were one record for all of
-- them (its last_seq the highest of any fleet's): each such driver gets its
-- own again, rebuilt from its stored fixes (highest seq, newest fix).
CREATE TEMP TABLE fleethub_own_records AS
SELECT fleet_id, driver_id, last_seq, last_ts, last_lat, last_lon
FROM (
    SELECT fleet_id, driver_id,
           max(seq) OVER per_driver AS last_seq,
           ts AS last_ts, lat AS last_lat, lon AS last_lon,
           row_number() OVER (PARTITION BY fleet_id, driver_id ORDER BY ts DESC, seq DESC) AS newest
    FROM positions
    WINDOW per_driver AS (PARTITION BY fleet_id, driver_id)
) fixes
WHERE newest = 1;

DELETE FROM drivers
WHERE driver_id IN (
    SELECT driver_id FROM fleethub_own_records GROUP BY driver_id HAVING count(*) > 1
);

-- updated_at: milliseconds since the epoch, as the hub writes it.
INSERT INTO drivers (driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon, updated_at)
SELECT o.driver_id, o.fleet_id, o.last_seq, o.last_ts, o.last_lat, o.last_lon,
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
FROM fleethub_own_records o
WHERE NOT EXISTS (
    SELECT 1 FROM drivers d WHERE d.fleet_id = o.fleet_id AND d.driver_id = o.driver_id
);

DROP TABLE fleethub_own_records;
