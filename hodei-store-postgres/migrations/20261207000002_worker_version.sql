-- Optimistic concurrency on workers, as on jobs: an update is
-- `UPDATE … WHERE id = $1 AND version = $2`, so two replicas (or two tasks)
-- changing the same worker cannot lose each other's change. Heartbeats
-- (`touch`) write in place and bump no version.
ALTER TABLE workers ADD COLUMN version bigint NOT NULL DEFAULT 1;
