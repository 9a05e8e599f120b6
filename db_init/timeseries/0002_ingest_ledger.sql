-- Ingestion bookkeeping that must commit atomically with the readings it describes, so it
-- lives in the timeseries database: an object is either loaded with its ledger row and its
-- rejected rows, or not at all. This is what makes a killed-and-rerun job exactly-once.

-- One row per object that was completely processed. A re-run skips an object whose ETag and
-- size still match, and reloads one that changed.
CREATE TABLE IF NOT EXISTS ingested_objects (
    object_key     text        PRIMARY KEY,
    etag           text        NOT NULL,
    size_bytes     bigint      NOT NULL,
    job_id         uuid        NOT NULL,
    outcome        text        NOT NULL,
    rows_read      bigint      NOT NULL,
    rows_inserted  bigint      NOT NULL,
    rows_duplicate bigint      NOT NULL,
    rows_rejected  bigint      NOT NULL,
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingested_objects_outcome_known CHECK (outcome IN ('loaded', 'file_rejected'))
);

-- Every row that was not loaded, and why. Exported to the bucket as rejected/<job id>.csv.
CREATE TABLE IF NOT EXISTS ingest_rejections (
    job_id      uuid   NOT NULL,
    object_key  text   NOT NULL,
    line_number bigint NOT NULL,
    reason      text   NOT NULL,
    raw_line    text   NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_rejections_job_idx
    ON ingest_rejections (job_id, object_key, line_number);
