-- Tasks, their items (one per unit of fan-out), their events, and API keys.
-- Every row carries its tenant; every query filters by it.

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant      text NOT NULL,
    name        text NOT NULL DEFAULT '',
    key_hash    bytea NOT NULL UNIQUE,          -- sha256 of the key; the key itself is never stored
    prefix      text NOT NULL,                  -- the first characters, to tell keys apart in a list
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Values every process must agree on, such as the secret that signs stream tokens.
CREATE TABLE longtask_meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

CREATE TABLE tasks (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant          text NOT NULL,
    kind            text NOT NULL,
    params          jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'canceled')),
    progress        real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    stage           text,
    message         text,
    error           jsonb,                      -- {code, message}
    result          jsonb,
    items_total     integer NOT NULL DEFAULT 0,
    items_done      integer NOT NULL DEFAULT 0, -- items that ended, whatever the outcome
    items_failed    integer NOT NULL DEFAULT 0,
    attempts        integer NOT NULL DEFAULT 0, -- item runs started, retries and crashes included
    last_seq        bigint NOT NULL DEFAULT 0,  -- the sequence number of the task's newest event
    idempotency_key text,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX tasks_by_tenant ON tasks (tenant, created_at DESC, id DESC);
CREATE INDEX tasks_by_tenant_status ON tasks (tenant, status, created_at DESC, id DESC);
CREATE INDEX tasks_by_tenant_kind ON tasks (tenant, kind, created_at DESC, id DESC);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE task_items (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id           uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    tenant            text NOT NULL,
    idx               integer NOT NULL,
    name              text NOT NULL DEFAULT '',
    payload           jsonb NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed', 'canceled')),
    progress          real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    stage             text,
    message           text,
    error             jsonb,
    result            jsonb,
    checkpoint        jsonb NOT NULL DEFAULT '{}',
    attempts          integer NOT NULL DEFAULT 0, -- runs started, crashed ones included
    job_id            text,                       -- the ARQ job id that may run this item now
    run_after         timestamptz,                -- a retry's earliest start
    lease_owner       text,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, idx)
);
CREATE INDEX task_items_pending ON task_items (created_at) WHERE status = 'pending';
CREATE INDEX task_items_leases ON task_items (lease_expires_at) WHERE status = 'running';

CREATE TABLE task_events (
    task_id     uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    tenant      text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

-- States only move forward: pending -> running -> completed | failed | canceled (a task may also
-- go from pending straight to an end). An UPDATE that tries anything else affects no row.
-- Items may also go from running back to pending: that is a retry or a lost lease.
CREATE FUNCTION longtask_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF OLD.status IN ('completed', 'failed', 'canceled') THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'pending' AND NOT (TG_TABLE_NAME = 'task_items' AND OLD.status = 'running') THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_forward_only BEFORE UPDATE OF status ON tasks
    FOR EACH ROW EXECUTE FUNCTION longtask_forward_only();
CREATE TRIGGER task_items_forward_only BEFORE UPDATE OF status ON task_items
    FOR EACH ROW EXECUTE FUNCTION longtask_forward_only();
