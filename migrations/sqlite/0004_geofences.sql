-- Geofences: the same logical schema as PostgreSQL (see
-- migrations/postgres/0004_geofences.sql for the why of each column).
CREATE TABLE geofences (
    id         TEXT    PRIMARY KEY,
    fleet_id   TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    feature    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX geofences_fleet ON geofences (fleet_id, id);
