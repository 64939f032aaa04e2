-- A worker's two writes per item run, each one round trip (and its own transaction) instead of
-- seven or eight: at thousands of short items a second, the round trips were most of the cost.
-- Both return jsonb (NULL when there is nothing to do) with the events they stored, which the
-- worker then publishes.

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

-- Room on each page for a row's next version: an update that changes no indexed column (progress,
-- heartbeats, last_seq) then stays on its page and writes no index entry (a HOT update).
ALTER TABLE tasks SET (fillfactor = 70);
ALTER TABLE task_items SET (fillfactor = 70);
