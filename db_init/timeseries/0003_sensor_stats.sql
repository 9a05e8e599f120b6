-- Per-sensor summary for GET /sensors: first and last reading and how many there are.
-- Ingestion updates it in the same transaction as the readings it adds, so it is exact
-- without counting the readings table at request time.
CREATE TABLE IF NOT EXISTS sensor_stats (
    sensor_uuid   uuid        PRIMARY KEY,
    first_ts      timestamptz NOT NULL,
    last_ts       timestamptz NOT NULL,
    reading_count bigint      NOT NULL
);

-- Readings loaded before this migration.
INSERT INTO sensor_stats (sensor_uuid, first_ts, last_ts, reading_count)
SELECT sensor_uuid, min(ts), max(ts), count(*) FROM readings GROUP BY sensor_uuid
ON CONFLICT (sensor_uuid) DO NOTHING;
