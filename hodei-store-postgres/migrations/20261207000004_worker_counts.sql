-- Dispatch reads, on every pass, how many workers of each provider are alive
-- (not terminating or terminated), and after each assignment and release
-- how many jobs a provider's workers hold. Both were full scans of
-- `workers`: about 10,000 rows per job with 10,000 idle agents.

-- Alive workers per provider, kept by a trigger in the transaction of each
-- write that starts or ends a worker's life, so a read is one row per
-- provider. Moving between two alive states (ready <-> busy, the writes of
-- every assignment) does not fire it, and heartbeats do not touch `state`.
CREATE TABLE worker_alive_counts (
    provider_id uuid   PRIMARY KEY,
    alive       bigint NOT NULL
);

CREATE FUNCTION workers_count_alive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.state NOT IN ('terminating', 'terminated') THEN
            UPDATE worker_alive_counts SET alive = alive - 1
             WHERE provider_id = OLD.provider_id;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.state NOT IN ('terminating', 'terminated') THEN
            INSERT INTO worker_alive_counts AS c (provider_id, alive)
            VALUES (NEW.provider_id, 1)
            ON CONFLICT (provider_id) DO UPDATE SET alive = c.alive + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER workers_count_alive_on_insert_delete
    AFTER INSERT OR DELETE ON workers
    FOR EACH ROW EXECUTE FUNCTION workers_count_alive();

CREATE TRIGGER workers_count_alive_on_update
    AFTER UPDATE OF state, provider_id ON workers
    FOR EACH ROW
    WHEN ((OLD.state IN ('terminating', 'terminated'))
              IS DISTINCT FROM (NEW.state IN ('terminating', 'terminated'))
          OR OLD.provider_id IS DISTINCT FROM NEW.provider_id)
    EXECUTE FUNCTION workers_count_alive();

-- The rows written before the triggers existed. CREATE TRIGGER holds a lock
-- that keeps writers out until this migration commits, so none is missed.
INSERT INTO worker_alive_counts (provider_id, alive)
SELECT provider_id, count(*) FROM workers
 WHERE state NOT IN ('terminating', 'terminated')
 GROUP BY provider_id;

-- The workers that can hold a job (not ready, creating or gone): what a
-- provider's load is summed over. Idle agents are not in it.
CREATE INDEX workers_holding_jobs_idx ON workers (provider_id)
    WHERE state NOT IN ('terminating', 'terminated', 'ready', 'creating');

-- `list` (the periodic passes over every worker) is ordered by creation:
-- without an index, 10,000 rows of JSON were sorted on disk (work_mem) on
-- every pass, about 90 ms on a busy machine.
CREATE INDEX workers_created_idx ON workers (created_at, id);
