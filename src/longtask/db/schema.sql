-- The longtask schema as it is now: every table, index, trigger and function in one place.
--
-- This file is a reference; it does not build databases. `migrate()` (db/migrate.py) applies the
-- files in migrations/ in order, each once, and that is how every database gets its schema.
-- tests/db/test_schema.py applies every migration to one empty database and this file to
-- another, and compares `pg_dump --schema-only` of the two: they must be the same.
--
-- Changing the schema:
-- - Write a new migration (migrations/NNNN_what.sql); never edit one that has been applied.
--   Then change this file to match. Columns added by ALTER TABLE come last in their table, in
--   the order they were added, as they do in the database.
-- - A function that a later migration changes gets a new versioned name: the migration creates
--   longtask_claim_v2 beside longtask_claim, the Python switches to longtask_claim_v2, and a
--   migration of a later release drops longtask_claim. During a deploy, the web and worker
--   processes of the old release keep calling the function they were written for; a CREATE OR
--   REPLACE would change it under them. Function bodies here are copied verbatim from the
--   migration that created them.
--
-- Not here: schema_migrations (migrate.py makes it), and the HNSW index of each embedding model
-- other than the local default (store/documents.py makes one when a worker first uses a model).
--
-- Every row carries its tenant; every query filters by it.

CREATE EXTENSION IF NOT EXISTS vector;  -- pgvector, for chunks.embedding


-- Keys and shared values -----------------------------------------------------------------------

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant      text NOT NULL,
    name        text NOT NULL DEFAULT '',
    key_hash    bytea NOT NULL UNIQUE,          -- sha256 of the key; the key itself is never stored
    prefix      text NOT NULL,                  -- the first characters, to tell keys apart
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Values every process must agree on, such as the secret that signs stream tokens.
CREATE TABLE longtask_meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);


-- Schedules ------------------------------------------------------------------------------------

-- Recurring tasks: each firing of a schedule makes an ordinary task. The scheduler claims a due
-- schedule row (FOR UPDATE SKIP LOCKED) and moves next_run_at past now in the transaction that
-- creates the task, so several workers never fire one slot twice, and slots missed while no
-- worker ran fire once, not once each.
CREATE TABLE schedules (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant        text NOT NULL,
    kind          text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}',
    cron          text NOT NULL,                -- UTC; 5 fields, or 6 with seconds first
    paused        boolean NOT NULL DEFAULT false,
    next_run_at   timestamptz,                  -- the next firing; NULL while paused
    last_run_at   timestamptz,                  -- the slot of the latest firing
    last_task_id  uuid,
    last_error    jsonb,                        -- why the latest slot made no task, if it did not
    fired         integer NOT NULL DEFAULT 0,   -- tasks made so far
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    queue         text NOT NULL DEFAULT 'longtask:queue'  -- the ARQ queue its tasks go to
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
CREATE INDEX schedules_due_by_queue ON schedules (queue, next_run_at) WHERE NOT paused;
CREATE INDEX schedules_by_tenant ON schedules (tenant, created_at DESC, id DESC);


-- Tasks, their items and their events ----------------------------------------------------------

-- A task is what a client submitted; it has one item per unit of fan-out (a batch has one per
-- file), each run by its own ARQ job. Both tables leave room on each page for a row's next
-- version (fillfactor 70): an update that changes no indexed column (progress, heartbeats,
-- last_seq) then stays on its page and writes no index entry (a HOT update).
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
    -- a retry of a task's failed items is a new task that points at the old one (states never
    -- move back)
    retry_of        uuid REFERENCES tasks (id) ON DELETE SET NULL,
    deadline_at     timestamptz,                -- past it, the task fails as deadline_exceeded
    run_at          timestamptz,                -- deferred: pending until then
    schedule_id     uuid REFERENCES schedules (id) ON DELETE SET NULL,
    -- the ARQ queue (LONGTASK_QUEUE): deployments that share one Postgres on different queues
    -- must not reap, re-enqueue or fire each other's work
    queue           text NOT NULL DEFAULT 'longtask:queue',
    UNIQUE (tenant, idempotency_key)
) WITH (fillfactor = 70);
CREATE INDEX tasks_by_tenant ON tasks (tenant, created_at DESC, id DESC);
CREATE INDEX tasks_by_tenant_status ON tasks (tenant, status, created_at DESC, id DESC);
CREATE INDEX tasks_by_tenant_kind ON tasks (tenant, kind, created_at DESC, id DESC);
CREATE INDEX tasks_by_schedule ON tasks (schedule_id, created_at DESC, id DESC)
    WHERE schedule_id IS NOT NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_deadlines ON tasks (deadline_at)
    WHERE deadline_at IS NOT NULL AND status IN ('pending', 'running');
CREATE INDEX tasks_dead_letters ON tasks (tenant, created_at DESC, id DESC)
    WHERE status = 'failed' OR items_failed > 0;

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
    run_after         timestamptz,                -- a retry's (or a deferred task's) earliest start
    lease_owner       text,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- the text the item's LLM call has written so far ({"step": n, "text": ...}), kept while it
    -- streams, so a client that joins late gets it whole before the live deltas
    stream            jsonb,
    UNIQUE (task_id, idx)
) WITH (fillfactor = 70);
CREATE INDEX task_items_pending ON task_items (created_at) WHERE status = 'pending';
CREATE INDEX task_items_pending_due ON task_items (run_after) WHERE status = 'pending';
CREATE INDEX task_items_leases ON task_items (lease_expires_at) WHERE status = 'running';

-- seq is per task and consecutive, taken from tasks.last_seq in the transaction that inserts the
-- event, so a client that reads "after n" never misses one that commits late. created_at is the
-- event's `at` on the wire: clock_timestamp(), read as the row is inserted, after its writer has
-- locked the task row (now(), its transaction's start, could go backwards along seq when a
-- transaction waited for that lock).
CREATE TABLE task_events (
    task_id     uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    tenant      text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
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


-- Webhooks -------------------------------------------------------------------------------------

-- The outbox of task-end webhooks (migration 0012). A trigger on tasks writes one delivery row in
-- the transaction that ends a task (whatever ends it: its last item, a cancel, a deadline, the
-- reaper), so a process that dies after the commit loses no webhook, and no job slot waits on a
-- receiver. Every worker claims due rows (FOR UPDATE SKIP LOCKED), POSTs them, and records the
-- outcome here.

-- The queues whose workers have a webhook URL (LONGTASK_WEBHOOK_URL): a worker adds its queue as
-- it starts with one, and removes it as it starts without, so a deployment without webhooks
-- writes no outbox rows.
CREATE TABLE webhook_queues (
    queue       text PRIMARY KEY,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per webhook; its id is the `webhook-id` of every attempt, so a receiver can tell a
-- retry from a new event. No foreign key: a task deleted before its webhook went out is still
-- announced (with what the row knows of it).
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant           text NOT NULL,
    task_id          uuid NOT NULL,
    event            text NOT NULL,             -- task.completed | task.failed | task.canceled
    queue            text NOT NULL,             -- the task's: its deployment's workers send it
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- when a worker may take it next; a claim moves it past the attempt's timeout, so a delivery
    -- whose worker died is taken again then
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    body             text,                      -- made at the first attempt, the same at every one
    last_error       text,
    last_status      integer,                   -- the receiver's HTTP status at the last attempt
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz                -- delivered, or given up
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (queue, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE FUNCTION longtask_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_queues WHERE queue = NEW.queue) THEN
        INSERT INTO webhook_deliveries (tenant, task_id, event, queue)
        VALUES (NEW.tenant, NEW.id, 'task.' || NEW.status, NEW.queue);
    END IF;
    RETURN NULL;
END $$;

-- AFTER: an update that longtask_forward_only refused never gets here
CREATE TRIGGER tasks_webhook_outbox AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (OLD.status IN ('pending', 'running')
          AND NEW.status IN ('completed', 'failed', 'canceled'))
    EXECUTE FUNCTION longtask_webhook_outbox();


-- Files, documents and chunks ------------------------------------------------------------------

-- Uploaded files, content-addressed per tenant, stored in parts so nobody holds a whole file.
CREATE TABLE files (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant        text NOT NULL,
    sha256        text,                         -- NULL while the upload is still streaming in
    size          bigint NOT NULL DEFAULT 0,    -- bytes stored so far (counted in tenant_storage)
    head          bytea NOT NULL DEFAULT '',    -- the first bytes, to judge the type by
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX files_by_hash ON files (tenant, sha256) WHERE sha256 IS NOT NULL;

-- The bytes of uploaded files each tenant keeps (LONGTASK_MAX_TENANT_BYTES): added part by part
-- as files are stored, only while they fit (store/files.py); taken off when files go.
CREATE TABLE tenant_storage (
    tenant  text PRIMARY KEY,
    bytes   bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION longtask_storage_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_storage s SET bytes = greatest(0, s.bytes - g.bytes)
    FROM (SELECT tenant, sum(size) AS bytes FROM gone GROUP BY tenant) g
    WHERE s.tenant = g.tenant;
    RETURN NULL;
END $$;

CREATE TRIGGER files_freed AFTER DELETE ON files REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION longtask_storage_freed();

CREATE TABLE file_parts (
    file_id   uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    n         integer NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (file_id, n)
);

CREATE TABLE documents (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant           text NOT NULL,
    sha256           text NOT NULL,
    file_id          uuid REFERENCES files (id) ON DELETE SET NULL,
    filename         text NOT NULL,
    size             bigint NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'indexed', 'failed')),
    error            jsonb,
    title            text,
    pages            integer,
    chunk_count      integer NOT NULL DEFAULT 0,
    summary          jsonb,                     -- {method: llm | extractive, text, model}
    embedding_model  text,
    embedding_dim    integer,
    generation       uuid,                      -- the chunk generation search sees
    task_id          uuid,                      -- the last ingest task that touched it
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    indexed_at       timestamptz,
    language         regconfig NOT NULL DEFAULT 'simple',  -- its text-search configuration
    UNIQUE (tenant, sha256)
);
CREATE INDEX documents_by_tenant ON documents (tenant, created_at DESC, id DESC);

CREATE TABLE document_pages (
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page         integer NOT NULL,              -- 1-based
    text         text NOT NULL,
    PRIMARY KEY (document_id, page)
);

-- A re-run writes a new generation beside the old one and switches documents.generation in one
-- transaction, so search never sees half a document and a retry never duplicates a chunk.
CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    tenant       text NOT NULL,
    generation   uuid NOT NULL,
    idx          integer NOT NULL,
    page_start   integer NOT NULL,
    page_end     integer NOT NULL,
    text         text NOT NULL,
    tokens       integer NOT NULL,
    model        text NOT NULL,
    embedding    vector NOT NULL,               -- any dimension: each model has its own
    language     regconfig NOT NULL DEFAULT 'simple',  -- its document's, when it was written
    tsv          tsvector,                      -- to_tsvector(language, text), for text search
    UNIQUE (document_id, generation, idx)
);
CREATE INDEX chunks_by_tenant ON chunks (tenant, document_id);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
-- One HNSW index per embedding model (its dimension fixed by the cast), named after the model
-- and dimension (store/documents.py: uuid5(URL, 'model:dim')): the local default here, the
-- others made when a worker first uses them.
CREATE INDEX chunks_hnsw_f14fa7c232e8 ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model = 'all-MiniLM-L6-v2';


-- A query is parsed in each language a tenant's documents use, and the parses ORed: one
-- tsquery that the GIN index can serve, whatever the language of each chunk.
CREATE AGGREGATE longtask_tsquery_or (tsquery) (SFUNC = tsquery_or, STYPE = tsquery);


-- A worker's writes per item run ---------------------------------------------------------------

-- Claim and finish are each one round trip (and one transaction) instead of seven or eight, and
-- progress reports travel in batches: at thousands of short items a second, the round trips were
-- most of the cost. Each returns jsonb (NULL when there is nothing to do) with the events it
-- stored, each with `at` (its created_at), which the worker then publishes.

-- Take a pending item for a job: NULL if the task has ended, or another job owns the item, or
-- it is not pending. The task row is locked first, as cancel locks it before the items: the same
-- order, no deadlock. The task's first claim also stores its `running` status event.
CREATE FUNCTION longtask_claim_v2(p_item uuid, p_job text, p_owner text, p_lease float8)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    was text;
    it record;
    t record;
    data jsonb;
    v_at timestamptz;
    events jsonb := '[]';
BEGIN
    SELECT tk.status INTO was FROM tasks tk JOIN task_items i ON i.task_id = tk.id
    WHERE i.id = p_item FOR UPDATE OF tk;
    IF was IS NULL OR was NOT IN ('pending', 'running') THEN
        RETURN NULL;
    END IF;
    UPDATE task_items SET status = 'running', attempts = attempts + 1, lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease),
        started_at = coalesce(started_at, now()), updated_at = now()
    WHERE id = p_item AND job_id = p_job AND status = 'pending'
    RETURNING task_id, tenant, idx, name, payload, checkpoint, attempts INTO it;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE tasks SET status = 'running', attempts = attempts + 1,
        started_at = coalesce(started_at, now()), updated_at = now(),
        last_seq = last_seq + CASE WHEN was = 'pending' THEN 2 ELSE 1 END
    WHERE id = it.task_id RETURNING kind, params, items_total, last_seq INTO t;
    IF was = 'pending' THEN
        data := '{"status": "running"}';
        INSERT INTO task_events (task_id, seq, tenant, type, data)
        VALUES (it.task_id, t.last_seq - 1, it.tenant, 'status', data)
        RETURNING created_at INTO v_at;
        events := events || jsonb_build_object('seq', t.last_seq - 1, 'type', 'status',
                                               'data', data, 'at', v_at);
    END IF;
    data := jsonb_build_object('item', it.idx, 'name', it.name, 'status', 'running',
                               'attempt', it.attempts, 'worker', p_owner);
    INSERT INTO task_events (task_id, seq, tenant, type, data)
    VALUES (it.task_id, t.last_seq, it.tenant, 'item', data)
    RETURNING created_at INTO v_at;
    events := events || jsonb_build_object('seq', t.last_seq, 'type', 'item', 'data', data,
                                           'at', v_at);
    RETURN jsonb_build_object(
        'task_id', it.task_id, 'tenant', it.tenant, 'kind', t.kind, 'params', t.params,
        'idx', it.idx, 'name', it.name, 'payload', it.payload, 'checkpoint', it.checkpoint,
        'attempts', it.attempts, 'items_total', t.items_total, 'events', events);
END $$;

-- Progress reports of many running items in one call (one round trip, one commit).
-- Element n of the arrays is one report: item, lease owner, percent, stage (NULL keeps the
-- item's), message, extra event data. The result is a jsonb array in the same order: the event
-- stored for report n ({task_id, seq, type, data, at}), or null where the lease is no longer
-- that owner's or the task is not running. Each task row is locked before its item's, the order
-- claim and cancel take, and a caller sorts the reports by task so that two calls lock tasks in
-- the same order; reports of one task are applied in array order, each seeing the one before.
CREATE FUNCTION longtask_progress_v2(p_items uuid[], p_owners text[], p_percents float8[],
                                     p_stages text[], p_messages text[], p_data jsonb[])
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    n int;
    task uuid;
    it record;
    t record;
    data jsonb;
    v_at timestamptz;
    ev jsonb;
    out jsonb := '[]';
BEGIN
    FOR n IN 1 .. coalesce(array_length(p_items, 1), 0) LOOP
        ev := NULL;
        SELECT tk.id INTO task FROM tasks tk JOIN task_items i ON i.task_id = tk.id
        WHERE i.id = p_items[n] AND tk.status = 'running' FOR UPDATE OF tk;
        IF FOUND THEN
            UPDATE task_items SET progress = p_percents[n], stage = coalesce(p_stages[n], stage),
                message = p_messages[n], updated_at = now()
            WHERE id = p_items[n] AND lease_owner = p_owners[n] AND status = 'running'
            RETURNING idx, name, progress, stage, message INTO it;
        END IF;
        IF FOUND THEN
            -- the overall percent: the items' mean, never going backwards
            UPDATE tasks tk SET last_seq = tk.last_seq + 1, updated_at = now(),
                progress = greatest(tk.progress, least(100,
                    ((SELECT coalesce(sum(o.progress), 0) FROM task_items o
                      WHERE o.task_id = tk.id AND o.id <> p_items[n]) + it.progress)
                    / greatest(tk.items_total, 1))),
                stage = CASE WHEN tk.items_total = 1 THEN it.stage ELSE tk.stage END,
                message = CASE WHEN tk.items_total = 1 THEN it.message ELSE tk.message END
            WHERE tk.id = task
            RETURNING tk.tenant, tk.last_seq, tk.progress INTO t;
            data := coalesce(p_data[n], '{}') || jsonb_build_object(
                'item', it.idx, 'name', it.name, 'percent', round(it.progress::numeric, 2),
                'stage', it.stage, 'message', it.message,
                'task_percent', round(t.progress::numeric, 2));
            INSERT INTO task_events (task_id, seq, tenant, type, data)
            VALUES (task, t.last_seq, t.tenant, 'progress', data)
            RETURNING created_at INTO v_at;
            ev := jsonb_build_object('task_id', task, 'seq', t.last_seq, 'type', 'progress',
                                     'data', data, 'at', v_at);
        END IF;
        out := out || jsonb_build_array(ev);
    END LOOP;
    RETURN out;
END $$;

-- End a running item whose lease `p_owner` holds (NULL: the lease is not ours). The task row's
-- lock orders the items of one task, so exactly one sees the last count and ends the task: with
-- its one item's outcome, or a batch summary (a batch fails only when every item failed).
CREATE FUNCTION longtask_finish_v2(p_item uuid, p_owner text, p_status text, p_result jsonb,
                                   p_error jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    it record;
    t record;
    data jsonb;
    v_at timestamptz;
    events jsonb := '[]';
    ended text;
    v_result jsonb := p_result;
    v_error jsonb := p_error;
    seq bigint;
BEGIN
    UPDATE task_items SET status = p_status, result = p_result, error = p_error, progress = 100,
        lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now()
    WHERE id = p_item AND lease_owner = p_owner AND status = 'running'
    RETURNING task_id, tenant, idx, name INTO it;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE tasks SET items_done = items_done + 1,
        items_failed = items_failed + (p_status = 'failed')::int, updated_at = now(),
        last_seq = last_seq + (status IN ('pending', 'running'))::int
    WHERE id = it.task_id
    RETURNING items_done, items_total, items_failed, status, last_seq INTO t;
    IF t.status IN ('pending', 'running') THEN  -- an ended task takes no more events
        data := jsonb_build_object('item', it.idx, 'name', it.name, 'status', p_status);
        IF p_error IS NOT NULL THEN
            data := data || jsonb_build_object('error', p_error);
        END IF;
        INSERT INTO task_events (task_id, seq, tenant, type, data)
        VALUES (it.task_id, t.last_seq, it.tenant, 'item', data)
        RETURNING created_at INTO v_at;
        events := events || jsonb_build_object('seq', t.last_seq, 'type', 'item', 'data', data,
                                               'at', v_at);
    END IF;
    IF t.items_done >= t.items_total AND t.status = 'running' THEN
        ended := p_status;
        IF t.items_total > 1 THEN
            ended := CASE WHEN t.items_failed >= t.items_total THEN 'failed' ELSE 'completed' END;
            v_result := jsonb_build_object(
                'items', (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                              'index', idx, 'name', name, 'status', status, 'result', result,
                              'error', error)) ORDER BY idx)
                          FROM task_items WHERE task_id = it.task_id),
                'completed', t.items_total - t.items_failed, 'failed', t.items_failed);
            v_error := CASE WHEN ended = 'failed' THEN jsonb_build_object(
                'code', 'all_items_failed', 'message', format('all %s items failed',
                                                             t.items_total)) END;
        END IF;
        UPDATE tasks SET status = ended, result = v_result, error = v_error, progress = 100,
            finished_at = now(), updated_at = now(), last_seq = last_seq + 1
        WHERE id = it.task_id AND status = 'running' RETURNING last_seq INTO seq;
        data := jsonb_build_object('status', ended, 'result', v_result);
        IF v_error IS NOT NULL THEN
            data := data || jsonb_build_object('error', v_error);
        END IF;
        INSERT INTO task_events (task_id, seq, tenant, type, data)
        VALUES (it.task_id, seq, it.tenant, 'status', data)
        RETURNING created_at INTO v_at;
        events := events || jsonb_build_object('seq', seq, 'type', 'status', 'data', data,
                                               'at', v_at);
    END IF;
    RETURN jsonb_build_object('task_id', it.task_id, 'task_status', ended,
                              'items_failed', t.items_failed, 'events', events);
END $$;


-- Kept for the release before ------------------------------------------------------------------

-- The versions before 0010 (their events have no `at`): a worker of the previous release, still
-- running during a deploy, calls these. A migration of a later release drops them.

-- Take a pending item for a job: NULL if the task has ended, or another job owns the item, or
-- it is not pending. The task row is locked first, as cancel locks it before the items: the same
-- order, no deadlock. The task's first claim also stores its `running` status event.
CREATE FUNCTION longtask_claim(p_item uuid, p_job text, p_owner text, p_lease float8)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    was text;
    it record;
    t record;
    data jsonb;
    events jsonb := '[]';
BEGIN
    SELECT tk.status INTO was FROM tasks tk JOIN task_items i ON i.task_id = tk.id
    WHERE i.id = p_item FOR UPDATE OF tk;
    IF was IS NULL OR was NOT IN ('pending', 'running') THEN
        RETURN NULL;
    END IF;
    UPDATE task_items SET status = 'running', attempts = attempts + 1, lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease),
        started_at = coalesce(started_at, now()), updated_at = now()
    WHERE id = p_item AND job_id = p_job AND status = 'pending'
    RETURNING task_id, tenant, idx, name, payload, checkpoint, attempts INTO it;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE tasks SET status = 'running', attempts = attempts + 1,
        started_at = coalesce(started_at, now()), updated_at = now(),
        last_seq = last_seq + CASE WHEN was = 'pending' THEN 2 ELSE 1 END
    WHERE id = it.task_id RETURNING kind, params, items_total, last_seq INTO t;
    IF was = 'pending' THEN
        data := '{"status": "running"}';
        INSERT INTO task_events (task_id, seq, tenant, type, data)
        VALUES (it.task_id, t.last_seq - 1, it.tenant, 'status', data);
        events := events || jsonb_build_object('seq', t.last_seq - 1, 'type', 'status',
                                               'data', data);
    END IF;
    data := jsonb_build_object('item', it.idx, 'name', it.name, 'status', 'running',
                               'attempt', it.attempts, 'worker', p_owner);
    INSERT INTO task_events (task_id, seq, tenant, type, data)
    VALUES (it.task_id, t.last_seq, it.tenant, 'item', data);
    events := events || jsonb_build_object('seq', t.last_seq, 'type', 'item', 'data', data);
    RETURN jsonb_build_object(
        'task_id', it.task_id, 'tenant', it.tenant, 'kind', t.kind, 'params', t.params,
        'idx', it.idx, 'name', it.name, 'payload', it.payload, 'checkpoint', it.checkpoint,
        'attempts', it.attempts, 'items_total', t.items_total, 'events', events);
END $$;

-- Progress reports of many running items in one call (one round trip, one commit).
-- Element n of the arrays is one report: item, lease owner, percent, stage (NULL keeps the
-- item's), message, extra event data. The result is a jsonb array in the same order: the event
-- stored for report n ({task_id, seq, type, data}), or null where the lease is no longer that
-- owner's or the task is not running. Each task row is locked before its item's, the order claim
-- and cancel take, and a caller sorts the reports by task so that two calls lock tasks in the
-- same order; reports of one task are applied in array order, each seeing the one before.
CREATE FUNCTION longtask_progress(p_items uuid[], p_owners text[], p_percents float8[],
                                  p_stages text[], p_messages text[], p_data jsonb[])
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    n int;
    task uuid;
    it record;
    t record;
    ev jsonb;
    out jsonb := '[]';
BEGIN
    FOR n IN 1 .. coalesce(array_length(p_items, 1), 0) LOOP
        ev := NULL;
        SELECT tk.id INTO task FROM tasks tk JOIN task_items i ON i.task_id = tk.id
        WHERE i.id = p_items[n] AND tk.status = 'running' FOR UPDATE OF tk;
        IF FOUND THEN
            UPDATE task_items SET progress = p_percents[n], stage = coalesce(p_stages[n], stage),
                message = p_messages[n], updated_at = now()
            WHERE id = p_items[n] AND lease_owner = p_owners[n] AND status = 'running'
            RETURNING idx, name, progress, stage, message INTO it;
        END IF;
        IF FOUND THEN
            -- the overall percent: the items' mean, never going backwards
            UPDATE tasks tk SET last_seq = tk.last_seq + 1, updated_at = now(),
                progress = greatest(tk.progress, least(100,
                    ((SELECT coalesce(sum(o.progress), 0) FROM task_items o
                      WHERE o.task_id = tk.id AND o.id <> p_items[n]) + it.progress)
                    / greatest(tk.items_total, 1))),
                stage = CASE WHEN tk.items_total = 1 THEN it.stage ELSE tk.stage END,
                message = CASE WHEN tk.items_total = 1 THEN it.message ELSE tk.message END
            WHERE tk.id = task
            RETURNING tk.tenant, tk.last_seq, tk.progress INTO t;
            ev := jsonb_build_object('task_id', task, 'seq', t.last_seq, 'type', 'progress',
                'data', coalesce(p_data[n], '{}') || jsonb_build_object(
                    'item', it.idx, 'name', it.name, 'percent', round(it.progress::numeric, 2),
                    'stage', it.stage, 'message', it.message,
                    'task_percent', round(t.progress::numeric, 2)));
            INSERT INTO task_events (task_id, seq, tenant, type, data)
            VALUES (task, t.last_seq, t.tenant, 'progress', ev -> 'data');
        END IF;
        out := out || jsonb_build_array(ev);
    END LOOP;
    RETURN out;
END $$;

-- End a running item whose lease `p_owner` holds (NULL: the lease is not ours). The task row's
-- lock orders the items of one task, so exactly one sees the last count and ends the task: with
-- its one item's outcome, or a batch summary (a batch fails only when every item failed).
CREATE FUNCTION longtask_finish(p_item uuid, p_owner text, p_status text, p_result jsonb,
                                p_error jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    it record;
    t record;
    data jsonb;
    events jsonb := '[]';
    ended text;
    v_result jsonb := p_result;
    v_error jsonb := p_error;
    seq bigint;
BEGIN
    UPDATE task_items SET status = p_status, result = p_result, error = p_error, progress = 100,
        lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now()
    WHERE id = p_item AND lease_owner = p_owner AND status = 'running'
    RETURNING task_id, tenant, idx, name INTO it;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE tasks SET items_done = items_done + 1,
        items_failed = items_failed + (p_status = 'failed')::int, updated_at = now(),
        last_seq = last_seq + (status IN ('pending', 'running'))::int
    WHERE id = it.task_id
    RETURNING items_done, items_total, items_failed, status, last_seq INTO t;
    IF t.status IN ('pending', 'running') THEN  -- an ended task takes no more events
        data := jsonb_build_object('item', it.idx, 'name', it.name, 'status', p_status);
        IF p_error IS NOT NULL THEN
            data := data || jsonb_build_object('error', p_error);
        END IF;
        INSERT INTO task_events (task_id, seq, tenant, type, data)
        VALUES (it.task_id, t.last_seq, it.tenant, 'item', data);
        events := events || jsonb_build_object('seq', t.last_seq, 'type', 'item', 'data', data);
    END IF;
    IF t.items_done >= t.items_total AND t.status = 'running' THEN
        ended := p_status;
        IF t.items_total > 1 THEN
            ended := CASE WHEN t.items_failed >= t.items_total THEN 'failed' ELSE 'completed' END;
            v_result := jsonb_build_object(
                'items', (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                              'index', idx, 'name', name, 'status', status, 'result', result,
                              'error', error)) ORDER BY idx)
                          FROM task_items WHERE task_id = it.task_id),
                'completed', t.items_total - t.items_failed, 'failed', t.items_failed);
            v_error := CASE WHEN ended = 'failed' THEN jsonb_build_object(
                'code', 'all_items_failed', 'message', format('all %s items failed',
                                                             t.items_total)) END;
        END IF;
        UPDATE tasks SET status = ended, result = v_result, error = v_error, progress = 100,
            finished_at = now(), updated_at = now(), last_seq = last_seq + 1
        WHERE id = it.task_id AND status = 'running' RETURNING last_seq INTO seq;
        data := jsonb_build_object('status', ended, 'result', v_result);
        IF v_error IS NOT NULL THEN
            data := data || jsonb_build_object('error', v_error);
        END IF;
        INSERT INTO task_events (task_id, seq, tenant, type, data)
        VALUES (it.task_id, seq, it.tenant, 'status', data);
        events := events || jsonb_build_object('seq', seq, 'type', 'status', 'data', data);
    END IF;
    RETURN jsonb_build_object('task_id', it.task_id, 'task_status', ended,
                              'items_failed', t.items_failed, 'events', events);
END $$;
