-- ensure_readings_partitions() (0001) re-checked for the partition with to_regclass()
-- after waiting for its lock; that reads a catalog cache the lock does not refresh, so two
-- sessions asking for the same new month at once could both try to create it (the second
-- failing with "relation already exists"). Same function, re-checked against pg_class.
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
            -- Not to_regclass() again: it reads this session's catalog cache, which taking
            -- an advisory lock does not refresh, so a partition another session created
            -- while we waited would look missing. A query of pg_class sees it.
            IF NOT EXISTS (
                SELECT 1 FROM pg_class
                WHERE relname = partition_name
                  AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
            ) THEN
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
