-- The device registry: the same logical schema as PostgreSQL (see
-- migrations/postgres/0003_devices.sql for the why of each column).
CREATE TABLE devices (
    device_id  TEXT    PRIMARY KEY,
    fleet_id   TEXT    NOT NULL,
    driver_id  TEXT    NOT NULL,
    protocol   TEXT    NOT NULL,
    speed_unit TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX devices_fleet ON devices (fleet_id, device_id);
