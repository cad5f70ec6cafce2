-- Every dispatch pass reads the scheduling strategy, the providers and the
-- alive workers per provider. A replica keeps those reads until one of the
-- three tables changes: each change is announced on this channel (the
-- payload names the table), once per transaction (Postgres folds equal
-- notices of one transaction), after it commits.
CREATE FUNCTION notify_dispatch_inputs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hodei_dispatch_inputs', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER scheduler_settings_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON scheduler_settings
    FOR EACH STATEMENT EXECUTE FUNCTION notify_dispatch_inputs_changed();

CREATE TRIGGER providers_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_dispatch_inputs_changed();

-- Written by the triggers on `workers` only when a worker starts or ends its
-- life (migration `worker_counts`): heartbeats and assignments are silent.
CREATE TRIGGER worker_alive_counts_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON worker_alive_counts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_dispatch_inputs_changed();
