-- Progress reports of many running items in one call (one round trip, one commit): a worker
-- running hundreds of items that report often made a round trip, and Postgres a commit, per
-- report.
--
-- Element n of the arrays is one report: item, lease owner, percent, stage (NULL keeps the
-- item's), message, extra event data. The result is a jsonb array in the same order: the event
-- stored for report n ({task_id, seq, type, data}), or null where the lease is no longer that
-- owner's or the task is not running. Each task row is locked before its item's, the order claim
-- and cancel take, and a caller sorts the reports by task so that two calls lock tasks in the same
-- order; reports of one task are applied in array order, each seeing the one before.
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
