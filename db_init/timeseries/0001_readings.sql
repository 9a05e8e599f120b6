-- Timeseries database: one row per reading.
--
-- Two storage paths, chosen here once:
--   * TimescaleDB available (docker compose): `readings` is a hypertable with 30-day
--     chunks, compressed per sensor after 30 days.
--   * Plain PostgreSQL >= 15 (no extension, as in CI): `readings` is natively
--     range-partitioned by month on `ts`, so each partition's index stays small and a
--     time-range query only touches the months it needs (partition pruning).
-- Both have the same columns, the same (sensor_uuid, ts) key, and the same
-- ensure_readings_partitions() entry point, so the application code is identical.

DO $migration$
DECLARE
    timescaledb_usable boolean :=
        EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
        AND coalesce(current_setting('shared_preload_libraries', true), '') LIKE '%timescaledb%';
BEGIN
    IF to_regclass('readings') IS NOT NULL THEN
        RETURN;
    END IF;

    IF timescaledb_usable THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE readings (
            ts          timestamptz      NOT NULL,
            sensor_uuid uuid             NOT NULL,
            value       double precision NOT NULL,
            -- Leading on sensor: serves "one sensor over a time range" and makes a
            -- (sensor, instant) pair unique, which ingestion relies on for exactly-once.
            CONSTRAINT readings_pkey PRIMARY KEY (sensor_uuid, ts)
        );
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '30 days');
        EXECUTE $sql$
            ALTER TABLE readings SET (
                timescaledb.compress,
                timescaledb.compress_segmentby = 'sensor_uuid',
                timescaledb.compress_orderby = 'ts'
            )
        $sql$;
        PERFORM add_compression_policy('readings', compress_after => INTERVAL '30 days');
    ELSE
        CREATE TABLE readings (
            ts          timestamptz      NOT NULL,
            sensor_uuid uuid             NOT NULL,
            value       double precision NOT NULL,
            -- INCLUDE (value) makes a sensor's range an index-only scan: no heap visits.
            CONSTRAINT readings_pkey PRIMARY KEY (sensor_uuid, ts) INCLUDE (value)
        ) PARTITION BY RANGE (ts);
        -- Catches rows of a month whose partition has not been created yet, so an insert
        -- never fails; ensure_readings_partitions() moves them out when it creates it.
        CREATE TABLE readings_default PARTITION OF readings DEFAULT;
    END IF;
END
$migration$;

-- Which storage path this database took, for readiness reports and for choosing
-- time_bucket() or date_bin() in queries.
CREATE OR REPLACE FUNCTION readings_storage() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
        THEN 'timescaledb-hypertable'
        ELSE 'postgresql-partitioned'
    END
$$;

-- Make sure monthly partitions exist for [lower_bound, upper_bound]. Ingestion calls it
-- before copying a batch. TimescaleDB creates chunks by itself, so there it does nothing.
-- Month boundaries are UTC. Safe to call concurrently: creators serialise on a lock.
CREATE OR REPLACE FUNCTION ensure_readings_partitions(lower_bound timestamptz, upper_bound timestamptz)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamp;
    month_end   timestamp;
    partition_name text;
    created int := 0;
    moving boolean;
BEGIN
    IF readings_storage() <> 'postgresql-partitioned' THEN
        RETURN 0;
    END IF;
    IF lower_bound IS NULL OR upper_bound IS NULL OR upper_bound < lower_bound THEN
        RAISE EXCEPTION 'ensure_readings_partitions: invalid range [%, %]', lower_bound, upper_bound;
    END IF;

    month_start := date_trunc('month', lower_bound AT TIME ZONE 'UTC');
    WHILE month_start <= upper_bound AT TIME ZONE 'UTC' LOOP
        month_end := month_start + INTERVAL '1 month';
        partition_name := format('readings_p%s', to_char(month_start, 'YYYYMM'));
        IF to_regclass(partition_name) IS NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext('ensure_readings_partitions'));
            IF to_regclass(partition_name) IS NULL THEN
                -- Rows that landed in the default partition for this month must move into
                -- the new one, or creating it would violate the default's constraint.
                moving := EXISTS (
                    SELECT 1 FROM readings_default
                    WHERE ts >= month_start AT TIME ZONE 'UTC' AND ts < month_end AT TIME ZONE 'UTC'
                );
                IF moving THEN
                    CREATE TEMP TABLE readings_moving (LIKE readings) ON COMMIT DROP;
                    WITH moved AS (
                        DELETE FROM readings_default
                        WHERE ts >= month_start AT TIME ZONE 'UTC' AND ts < month_end AT TIME ZONE 'UTC'
                        RETURNING *
                    )
                    INSERT INTO readings_moving SELECT * FROM moved;
                END IF;
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                    partition_name,
                    month_start AT TIME ZONE 'UTC',
                    month_end AT TIME ZONE 'UTC'
                );
                IF moving THEN
                    INSERT INTO readings SELECT * FROM readings_moving;
                    DROP TABLE readings_moving;
                END IF;
                created := created + 1;
            END IF;
        END IF;
        month_start := month_end;
    END LOOP;
    RETURN created;
END
$$;
