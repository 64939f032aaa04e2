-- Every event says when it was stored (`at` on the wire, task_events.created_at here).
--
-- created_at took now(), the time its transaction began. A transaction that waited for a task's
-- row lock (a progress batch behind a finish, a cancel behind a progress batch) then stored a
-- later event with an earlier time than the one before it. clock_timestamp() is read when the
-- row is inserted, which every writer does after it has locked the task row and taken the
-- sequence number: along a task's seq, created_at never goes backwards.
ALTER TABLE task_events ALTER COLUMN created_at SET DEFAULT clock_timestamp();

-- The functions of migrations 0008 and 0009, their events now with `at` (the stored
-- created_at). Under new names: a worker of the release before, still running during a deploy,
-- keeps calling longtask_claim, longtask_finish and longtask_progress as they were; a later
-- release drops them.

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
