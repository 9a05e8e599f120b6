-- Metadata database: the sensor registry and the bookkeeping of background jobs.
-- Idempotent (IF NOT EXISTS) so that a partially applied run can simply be repeated.

CREATE TABLE IF NOT EXISTS sensors (
    sensor_uuid uuid        PRIMARY KEY,
    sensor_name text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sensors_name_key UNIQUE (sensor_name),
    CONSTRAINT sensors_name_not_blank CHECK (btrim(sensor_name) <> '')
);

-- Name-prefix filters (`GET /sensors?prefix=sensor_001`) use this with LIKE 'prefix%'.
CREATE INDEX IF NOT EXISTS sensors_name_pattern_idx ON sensors (sensor_name text_pattern_ops);

-- One row per background job (ingestion, anomaly scan). Counters are updated at batch
-- boundaries, so a job's row is also its progress report.
CREATE TABLE IF NOT EXISTS jobs (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'queued',
    params           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    objects_total    bigint      NOT NULL DEFAULT 0,
    objects_done     bigint      NOT NULL DEFAULT 0,
    bytes_total      bigint      NOT NULL DEFAULT 0,
    bytes_done       bigint      NOT NULL DEFAULT 0,
    rows_read        bigint      NOT NULL DEFAULT 0,
    rows_inserted    bigint      NOT NULL DEFAULT 0,
    rows_duplicate   bigint      NOT NULL DEFAULT 0,
    rows_rejected    bigint      NOT NULL DEFAULT 0,
    result           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    failure_reason   text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- The process that runs the job and its last sign of life: a job whose worker stopped
    -- beating is recognised as abandoned by the next process that starts.
    worker_id        text,
    heartbeat_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT jobs_kind_known CHECK (kind IN ('ingest_mapping', 'ingest_timeseries', 'anomaly_scan')),
    CONSTRAINT jobs_status_known CHECK (
        status IN ('queued', 'running', 'succeeded', 'completed_with_errors', 'failed', 'cancelled')
    )
);

-- At most one active job per kind, enforced by the database so that it also holds across
-- several API replicas sharing it.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_active_per_kind
    ON jobs (kind) WHERE status IN ('queued', 'running');

-- Newest-first listing with keyset pagination.
CREATE INDEX IF NOT EXISTS jobs_created_at_idx ON jobs (created_at DESC, id DESC);

-- The first rejected rows of a job, for the job report (the full list goes to the bucket).
CREATE TABLE IF NOT EXISTS job_errors (
    job_id      uuid   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq         int    NOT NULL,
    object_key  text,
    line_number bigint,
    reason      text   NOT NULL,
    raw_line    text,
    PRIMARY KEY (job_id, seq)
);
