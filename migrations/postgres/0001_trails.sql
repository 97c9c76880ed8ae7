-- Trails on PostgreSQL: one row per stored fix, partitioned by fix time into
-- daily partitions (positions_YYYYMMDD) so retention drops whole tables.
--
-- Fix times are kept as bigint milliseconds since the Unix epoch (UTC), the
-- unit the wire protocol and the hub use: no conversion on the hot path, and
-- the dedup key compares exactly what the app sent. Humans can read them
-- with to_timestamp(ts / 1000.0).

CREATE TABLE positions (
    driver_id text             NOT NULL,
    fleet_id  text             NOT NULL,
    seq       bigint           NOT NULL,
    ts        bigint           NOT NULL,
    lat       double precision NOT NULL,
    lon       double precision NOT NULL,
    speed     double precision,
    heading   double precision,
    acc       double precision,
    -- Dedup key (a resend of the same fix is skipped) and the index behind
    -- "one driver, a time range". It must hold the partition key, ts.
    CONSTRAINT positions_pkey PRIMARY KEY (driver_id, ts, seq)
) PARTITION BY RANGE (ts);

-- Catches fixes whose day has no partition yet, so an insert never fails;
-- maintenance moves such rows into their day's partition.
CREATE TABLE positions_default PARTITION OF positions DEFAULT;

-- One row per driver: the highest seq stored (welcome.last_seq) and the
-- newest stored fix. Survives retention, so seq numbering stays consistent.
CREATE TABLE drivers (
    driver_id  text             PRIMARY KEY,
    fleet_id   text             NOT NULL,
    last_seq   bigint           NOT NULL,
    last_ts    bigint           NOT NULL,
    last_lat   double precision NOT NULL,
    last_lon   double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX drivers_fleet ON drivers (fleet_id);

-- Creates the partition for one UTC day if it is missing, moving any rows the
-- default partition holds for that day into it. Returns true when it created one.
-- Attaching (rather than CREATE TABLE ... PARTITION OF) keeps the lock on
-- `positions` weak, so inserts to other days carry on meanwhile.
CREATE FUNCTION fleethub_ensure_day_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text   := 'positions_' || to_char(day, 'YYYYMMDD');
    lo   bigint := (extract(epoch FROM day::timestamp) * 1000)::bigint;
    hi   bigint := lo + 86400000;
BEGIN
    -- Serialises hub nodes that run maintenance at the same time.
    PERFORM pg_advisory_xact_lock(hashtext('fleethub_partitions'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Taken first so no insert lands in the default partition for this day
    -- between the move and the attach (which would make the attach fail).
    LOCK TABLE positions_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE positions INCLUDING ALL)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM positions_default WHERE ts >= $1 AND ts < $2 RETURNING *)
         INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (ts >= %s AND ts < %s)',
                   part, part || '_range', lo, hi);
    EXECUTE format('ALTER TABLE positions ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                   part, lo, hi);
    RETURN true;
END;
$$;

-- Drops every daily partition whose whole day lies before `cutoff_ms`, and
-- deletes older rows from the default partition. Returns the partitions dropped.
CREATE FUNCTION fleethub_drop_partitions_before(cutoff_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part    record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fleethub_partitions'));
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'positions'::regclass
          AND c.relname ~ '^positions_[0-9]{8}$'
          AND (extract(epoch FROM to_date(substr(c.relname, 11), 'YYYYMMDD')::timestamp) * 1000)::bigint
              + 86400000 <= cutoff_ms
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM positions_default WHERE ts < cutoff_ms;
    RETURN dropped;
END;
$$;
