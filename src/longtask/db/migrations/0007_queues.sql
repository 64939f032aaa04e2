-- The ARQ queue a task (and a schedule) belongs to. Deployments that share one Postgres on
-- different queues (LONGTASK_QUEUE) must not reap, re-enqueue or fire each other's work.
ALTER TABLE tasks ADD COLUMN queue text NOT NULL DEFAULT 'longtask:queue';
ALTER TABLE schedules ADD COLUMN queue text NOT NULL DEFAULT 'longtask:queue';
CREATE INDEX schedules_due_by_queue ON schedules (queue, next_run_at) WHERE NOT paused;
