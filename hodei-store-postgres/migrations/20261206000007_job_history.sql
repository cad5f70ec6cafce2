-- Every job state change, in the order recorded: the job page's timeline
-- (GET /api/v1/jobs/{id}/events). No foreign key to jobs: pruning deletes a
-- job's history by the time of its last (terminal) record.
CREATE TABLE job_history (
    id         bigserial   PRIMARY KEY,
    job_id     uuid        NOT NULL,
    from_state text,
    to_state   text        NOT NULL,
    at         timestamptz NOT NULL,
    attempt    integer     NOT NULL,
    worker_id  uuid,
    reason     text        NOT NULL DEFAULT ''
);
CREATE INDEX job_history_job_idx ON job_history (job_id, id);
