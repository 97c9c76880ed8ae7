-- Trails in the embedded SQLite file: the same logical schema as PostgreSQL,
-- without partitions (retention deletes rows by fix time instead).
-- Fix times are integer milliseconds since the Unix epoch (UTC).

-- Clustered on the dedup key, which is also "one driver, a time range".
CREATE TABLE positions (
    driver_id TEXT    NOT NULL,
    fleet_id  TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    lat       REAL    NOT NULL,
    lon       REAL    NOT NULL,
    speed     REAL,
    heading   REAL,
    acc       REAL,
    PRIMARY KEY (driver_id, ts, seq)
) WITHOUT ROWID;

-- Serves retention's "everything older than".
CREATE INDEX positions_ts ON positions (ts);

CREATE TABLE drivers (
    driver_id  TEXT    PRIMARY KEY,
    fleet_id   TEXT    NOT NULL,
    last_seq   INTEGER NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_lat   REAL    NOT NULL,
    last_lon   REAL    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
