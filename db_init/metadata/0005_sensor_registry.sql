-- The sensor registry's metadata, kept by POST/PATCH /sensors. The mapping file only ever
-- adds sensors (or confirms them); it never touches these columns.
ALTER TABLE sensors
    ADD COLUMN IF NOT EXISTS sensor_type text,
    ADD COLUMN IF NOT EXISTS unit text,
    ADD COLUMN IF NOT EXISTS location text,
    ADD COLUMN IF NOT EXISTS active boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS updated_by text,
    -- Step 1 of DELETE /sensors/{name}: once set, the sensor is gone for readers and
    -- writers; step 2 deletes its readings in the timeseries database, step 3 this row.
    -- A crash in between leaves this mark, and a re-run (or the next startup) finishes.
    ADD COLUMN IF NOT EXISTS deleting_since timestamptz;

CREATE INDEX IF NOT EXISTS sensors_location_idx ON sensors (location) WHERE location IS NOT NULL;
CREATE INDEX IF NOT EXISTS sensors_type_idx ON sensors (sensor_type) WHERE sensor_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS sensors_deleting_idx ON sensors (deleting_since)
    WHERE deleting_since IS NOT NULL;
