-- Every change to existing sensors (rename, delete, truncate) notifies the channel
-- 'sensor_registry_changed'. Each service process caches name -> uuid lookups and drops
-- its cache on this notification. New sensors need none: only found names are cached.
CREATE OR REPLACE FUNCTION notify_sensor_registry_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sensor_registry_changed', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS sensors_changed ON sensors;
CREATE TRIGGER sensors_changed
    AFTER UPDATE OR DELETE ON sensors
    FOR EACH STATEMENT EXECUTE FUNCTION notify_sensor_registry_changed();

DROP TRIGGER IF EXISTS sensors_truncated ON sensors;
CREATE TRIGGER sensors_truncated
    AFTER TRUNCATE ON sensors
    FOR EACH STATEMENT EXECUTE FUNCTION notify_sensor_registry_changed();
