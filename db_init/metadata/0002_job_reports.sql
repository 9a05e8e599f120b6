-- Where a job's full list of rejected rows was written in the bucket, if anywhere.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS rejected_rows_key text;
