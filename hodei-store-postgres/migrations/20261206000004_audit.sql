-- The append-only audit log (GET /api/v1/audit): who did what to which job,
-- provider, template or secret. The store only inserts and reads; ids
-- increase in the order entries were recorded (the paging cursor).
CREATE TABLE audit_log (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    target  text        NOT NULL,
    outcome text        NOT NULL,
    detail  text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_target_idx ON audit_log (target, id);
CREATE INDEX audit_log_at_idx ON audit_log (at);
