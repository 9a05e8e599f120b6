-- One row per sensor analysed by a fleet scan (an anomaly_scan job). The row and the
-- job's progress are separate writes: a re-run of the same sensor in the same job (a
-- retried write) replaces its row instead of adding a second.
CREATE TABLE IF NOT EXISTS anomaly_scan_results (
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sensor_uuid     uuid NOT NULL,
    sensor_name     text NOT NULL,
    points          bigint NOT NULL,
    anomaly_count   integer NOT NULL,
    window_count    integer NOT NULL,
    change_point_count integer NOT NULL,
    max_score       double precision NOT NULL,
    -- windows, change points, segments, parameters and explanation, as the API renders them
    result          jsonb NOT NULL,
    analysed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, sensor_uuid)
);

-- The report's order: most anomaly windows first, then the most severe.
CREATE INDEX IF NOT EXISTS anomaly_scan_results_rank_idx
    ON anomaly_scan_results (job_id, window_count DESC, max_score DESC, sensor_name);
