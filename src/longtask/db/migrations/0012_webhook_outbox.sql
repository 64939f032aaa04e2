-- Webhooks from an outbox. A trigger on tasks writes one delivery row in the transaction that
-- ends a task (whatever ends it: its last item, a cancel, a deadline, the reaper), so a process
-- that dies after the commit loses no webhook, and no job slot waits on a receiver. Every worker
-- claims due rows (FOR UPDATE SKIP LOCKED, row locks of one statement: safe behind a pooler in
-- transaction mode), POSTs them, and records the outcome here.

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
