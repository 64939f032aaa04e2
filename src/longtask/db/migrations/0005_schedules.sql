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
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
CREATE INDEX schedules_by_tenant ON schedules (tenant, created_at DESC, id DESC);

ALTER TABLE tasks ADD COLUMN schedule_id uuid REFERENCES schedules (id) ON DELETE SET NULL;
CREATE INDEX tasks_by_schedule ON tasks (schedule_id, created_at DESC, id DESC)
    WHERE schedule_id IS NOT NULL;
