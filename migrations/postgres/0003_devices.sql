-- The device registry: phone apps (OsmAnd / Traccar Client, OwnTracks) that
-- post positions for a driver with a per-device secret key.
--
-- device_id is unique across fleets: OsmAnd sends nothing but `id`, so the id
-- alone must say whose device it is. Only a SHA-256 of the key is kept (hex):
-- keys are 32 random bytes, so a fast hash is enough, and a leaked table does
-- not give anyone a key. created_at: milliseconds since the Unix epoch.
CREATE TABLE devices (
    device_id  text   PRIMARY KEY,
    fleet_id   text   NOT NULL,
    driver_id  text   NOT NULL,
    protocol   text   NOT NULL,
    speed_unit text   NOT NULL,
    key_hash   text   NOT NULL,
    created_at bigint NOT NULL
);

-- Serves "a fleet's devices", in id order.
CREATE INDEX devices_fleet ON devices (fleet_id, device_id);
