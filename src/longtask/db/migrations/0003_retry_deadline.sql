-- A retry of a task's failed items is a new task that points at the old one (states never move
-- back); a task may carry a deadline, past which it fails as deadline_exceeded.
ALTER TABLE tasks ADD COLUMN retry_of uuid REFERENCES tasks (id) ON DELETE SET NULL;
ALTER TABLE tasks ADD COLUMN deadline_at timestamptz;
CREATE INDEX tasks_deadlines ON tasks (deadline_at)
    WHERE deadline_at IS NOT NULL AND status IN ('pending', 'running');
CREATE INDEX tasks_dead_letters ON tasks (tenant, created_at DESC, id DESC)
    WHERE status = 'failed' OR items_failed > 0;
