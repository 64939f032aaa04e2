-- A deferred task: it stays pending until run_at, its items carry the same time in run_after
-- (ARQ's _defer_until, and the reconciler's guide after Redis lost the queue).
ALTER TABLE tasks ADD COLUMN run_at timestamptz;
CREATE INDEX task_items_pending_due ON task_items (run_after) WHERE status = 'pending';
