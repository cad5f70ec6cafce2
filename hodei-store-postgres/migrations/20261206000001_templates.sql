-- Versioned job templates: one row per (name, version); the latest version
-- of a name is its highest. Names compare bytewise (COLLATE "C"), so the
-- listing order matches every other store's.
CREATE TABLE templates (
    name       TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    data       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
