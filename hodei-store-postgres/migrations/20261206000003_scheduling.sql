-- Scheduling over the whole queue, and scheduling settings shared by replicas.

-- Aging as a time-invariant key: a job's effective priority at time T is
-- priority + (T - enqueued_at) / 6 s (10 points a minute), so ordering by it
-- is ordering by enqueued_at_ms - priority * 6000, ascending: a number fixed at
-- enqueue time that an index can serve (hodei_core::scheduler::aged_rank).
ALTER TABLE job_queue ADD COLUMN aged_key bigint;
UPDATE job_queue
   SET aged_key = floor(extract(epoch FROM enqueued_at) * 1000)::bigint - priority::bigint * 6000;
ALTER TABLE job_queue ALTER COLUMN aged_key SET NOT NULL;
-- Claim order (and page walks) over unclaimed rows: aged, and FIFO.
DROP INDEX IF EXISTS job_queue_ready_idx;
CREATE INDEX job_queue_aged_idx ON job_queue (aged_key, seq) WHERE lease_id IS NULL;
CREATE INDEX job_queue_fifo_idx ON job_queue (enqueued_at, seq) WHERE lease_id IS NULL;

-- The strategy every replica uses (one row).
CREATE TABLE scheduler_settings (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    strategy   text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- At most max_running jobs with a concurrency key scheduled or running at once.
CREATE TABLE concurrency_limits (
    key         text        PRIMARY KEY,
    max_running integer     NOT NULL CHECK (max_running >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The slots jobs hold under their key (taken before leaving the queue,
-- freed when the job ends or is queued again).
CREATE TABLE concurrency_slots (
    job_id      uuid        PRIMARY KEY,
    key         text        NOT NULL,
    acquired_at timestamptz NOT NULL
);
CREATE INDEX concurrency_slots_key_idx ON concurrency_slots (key);
