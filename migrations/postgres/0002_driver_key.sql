-- A driver's identity is its fleet and its id: fleets choose their drivers'
-- ids on their own, so two fleets may each have a `d1`. Until now `drivers`
-- was keyed by driver_id alone (two such drivers shared one record: one
-- `last_seq`, one fleet) and `positions` deduplicated on (driver_id, ts, seq)
-- (one fleet's fix could be skipped as a "duplicate" of the other's). Both
-- keys now lead with fleet_id, the order every read names a driver in.
--
-- Existing rows are all kept, with their fleet_id: the old keys were unique,
-- so the wider new ones are too. Rebuilding the primary key of `positions`
-- locks the table and reads every partition once: apply it with the hub
-- stopped (the hub applies it when it starts).

-- The primary key of a partitioned table must hold the partition key, ts.
-- Dropping the parent's constraint drops the partitions' (attached) ones.
ALTER TABLE positions DROP CONSTRAINT positions_pkey;

-- A partition whose own primary key was not attached to the parent's would
-- refuse the new one ("multiple primary keys"): drop any such leftover.
DO $$
DECLARE
    leftover record;
BEGIN
    FOR leftover IN
        SELECT c.relname AS part, k.conname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
        WHERE i.inhparent = 'positions'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', leftover.part, leftover.conname);
    END LOOP;
END;
$$;

-- Dedup key and the index behind "one driver of one fleet, a time range".
-- Partitions made later copy it (fleethub_ensure_day_partition: LIKE positions).
ALTER TABLE positions
    ADD CONSTRAINT positions_pkey PRIMARY KEY (fleet_id, driver_id, ts, seq);

ALTER TABLE drivers DROP CONSTRAINT drivers_pkey;
ALTER TABLE drivers ADD CONSTRAINT drivers_pkey PRIMARY KEY (fleet_id, driver_id);
-- The primary key now leads with fleet_id and serves "a fleet's drivers".
DROP INDEX drivers_fleet;

-- Records of ids that more than one fleet used were one record for all of
-- them (its last_seq the highest of any fleet's): each such driver gets its
-- own again, rebuilt from its stored fixes (highest seq, newest fix).
CREATE TEMPORARY TABLE fleethub_own_records AS
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

INSERT INTO drivers (fleet_id, driver_id, last_seq, last_ts, last_lat, last_lon)
SELECT o.fleet_id, o.driver_id, o.last_seq, o.last_ts, o.last_lat, o.last_lon
FROM fleethub_own_records o
WHERE NOT EXISTS (
    SELECT 1 FROM drivers d WHERE d.fleet_id = o.fleet_id AND d.driver_id = o.driver_id
);

DROP TABLE fleethub_own_records;
