-- Sensors whose readings were deleted (step 2 of DELETE /sensors/{name}). Writers of
-- readings take the shared side of the advisory lock READINGS_DELETE_LOCK_KEY in their
-- transaction and drop rows of these uuids; a deletion takes the exclusive side while it
-- records the uuid here and deletes the readings, so no write can land after it.
CREATE TABLE IF NOT EXISTS deleted_sensors (
    sensor_uuid uuid        PRIMARY KEY,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
