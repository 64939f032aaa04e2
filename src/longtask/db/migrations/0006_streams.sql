-- The text an item's LLM call has written so far ({"step": n, "text": ...}), kept while it streams,
-- so a client that joins late or reconnects gets it whole before the live deltas.
ALTER TABLE task_items ADD COLUMN stream jsonb;
