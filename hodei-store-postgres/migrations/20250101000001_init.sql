-- Hodei store schema, version 1. Every statement the crate runs is a runtime
-- query against these tables (no compile-time checked macros).

-- Jobs: the serde form of hodei_core::Job in `data`, with the columns the
-- store filters and orders by next to it. `version` is the optimistic
-- concurrency token; `seq` breaks ties between equal `created_at`.
CREATE TABLE jobs (
    id          uuid        PRIMARY KEY,
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    state       text        NOT NULL,
    priority    integer     NOT NULL,
    worker_id   uuid        NULL,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    finished_at timestamptz NULL,
    data        jsonb       NOT NULL
);
CREATE INDEX jobs_newest_idx ON jobs (created_at DESC, seq DESC);
CREATE INDEX jobs_state_newest_idx ON jobs (state, created_at DESC, seq DESC);
CREATE INDEX jobs_worker_idx ON jobs (worker_id, created_at DESC) WHERE worker_id IS NOT NULL;
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- The queue: one row per queued or claimed job. A claim sets lease_id (a new
-- uuid per claim) and lease_expires_at; complete/release name the lease id.
CREATE TABLE job_queue (
    job_id           uuid        PRIMARY KEY,
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    priority         integer     NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    lease_id         uuid        NULL,
    lease_expires_at timestamptz NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01);
-- Claim order over unclaimed rows only.
CREATE INDEX job_queue_ready_idx ON job_queue (priority DESC, enqueued_at, seq) WHERE lease_id IS NULL;
-- The rescuer's scan of held leases.
CREATE INDEX job_queue_leased_idx ON job_queue (lease_expires_at) WHERE lease_id IS NOT NULL;

-- Workers: serde form in `data`; the hash of the current session token, unique.
CREATE TABLE workers (
    id           uuid        PRIMARY KEY,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    provider_id  uuid        NOT NULL,
    state        text        NOT NULL,
    created_at   timestamptz NOT NULL,
    session_hash text        NULL UNIQUE,
    data         jsonb       NOT NULL
);

-- Providers: unique name.
CREATE TABLE providers (
    id   uuid  PRIMARY KEY,
    name text  NOT NULL,
    data jsonb NOT NULL,
    CONSTRAINT providers_name_key UNIQUE (name)
);

-- Logs: one row per entry, idempotent per (job, attempt, sequence).
CREATE TABLE job_logs (
    job_id   uuid        NOT NULL,
    attempt  integer     NOT NULL,
    sequence bigint      NOT NULL,
    stream   text        NOT NULL,
    data     bytea       NOT NULL,
    ts       timestamptz NOT NULL,
    PRIMARY KEY (job_id, attempt, sequence)
);
-- Highest contiguous sequence per (job, attempt), kept in the append's transaction.
CREATE TABLE log_progress (
    job_id     uuid    NOT NULL,
    attempt    integer NOT NULL,
    contiguous bigint  NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

-- One-time registration tokens, by SHA-256 hash.
CREATE TABLE otp_tokens (
    hash       text        PRIMARY KEY,
    worker_id  uuid        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX otp_tokens_expires_idx ON otp_tokens (expires_at);

-- Expiring leases that elect one leader per name among several replicas.
CREATE TABLE leader_leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
