-- Fair dispatch: tenants' item jobs wait in lanes and move onto the ARQ queue in turns, under
-- the tenants' caps. The design is in fair.py; this script is its only writer, so each call is
-- atomic and every count changes together with what it counts.
--
-- KEYS[1]  the ARQ queue (a sorted set of job ids by the time they may start)
-- ARGV     1 operation, 2 now (ms, the caller's clock, as ARQ scores use), 3 key prefix,
--          4-6 ARQ's job, result and in-progress key prefixes, 7 how long an ARQ job key lives
--          (ms), 8 the tenant cap (0: none), 9 the most jobs to dispatch in this call,
--          10 the spare: jobs the ARQ queue may hold beyond what the fleet runs are those the
--          fleet ends in this many ms (at least 1, at most the fleet's capacity),
--          11 n, then n pairs (kind, its cap); then the operation's own arguments.
--
-- Keys under the prefix:
--   wait:<lane>     sorted set: the lane's waiting job ids by the time they may start
--   body            hash: a waiting job's ARQ body, by job id
--   ring            sorted set: lanes whose first job may start now, in turn order (score: turn)
--   turn            the turn counter
--   timers          sorted set: lanes whose first job starts later, by that time
--   parked:<tenant> set: the tenant's lanes that met a cap; back in the ring when a slot frees
--   parked          set: tenants with parked lanes
--   run             hash: dispatched jobs (on the ARQ queue, not ended) -> lane
--   count           hash: w (all waiting), w:<tenant> (waiting), r:<tenant> (dispatched),
--                   l:<lane> (dispatched, for a lane with a cap of its own)
--   fleet, slots    the live workers (sorted by expiry) and their max_jobs
--   capacity        the sum of the live workers' max_jobs
--   pace            hash: r, the rate jobs end at (per ms, decaying over TAU ms), t, when last

local queue = KEYS[1]
local op, now, P = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local JOB, RESULT, IN_PROGRESS = ARGV[4], ARGV[5], ARGV[6]
local job_ttl = tonumber(ARGV[7])
local tenant_cap, budget, spare_ms = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local kind_caps = {}
local ncaps = tonumber(ARGV[11])
for i = 1, ncaps do kind_caps[ARGV[10 + 2 * i]] = tonumber(ARGV[11 + 2 * i]) end
local arg0 = 12 + 2 * ncaps -- the operation's first argument

local RING, TURN, TIMERS, BODY = P .. 'ring', P .. 'turn', P .. 'timers', P .. 'body'
local RUN, COUNT, PARKED, PACE = P .. 'run', P .. 'count', P .. 'parked', P .. 'pace'
local TAU = 2000 -- ms: the rate of endings forgets what is older than a few seconds
-- the spare's ceiling, in fleets: ARQ's worker reads max(5 x max_jobs, 100) ids a poll, so its
-- running jobs and four times as many spare ones fit in one read of one worker's
local SPARE_FLEETS = 4

-- a lane is '<bytes in tenant>:<tenant><kind>', kind empty unless the kind has a cap of its own
local function split(lane)
    local len, tail = string.match(lane, '^(%d+):(.*)$')
    len = tonumber(len)
    return string.sub(tail, 1, len), string.sub(tail, len + 1)
end

local function count(field)
    return tonumber(redis.call('hget', COUNT, field) or '0')
end

local function add(field, by)
    if redis.call('hincrby', COUNT, field, by) <= 0 then
        redis.call('hdel', COUNT, field)
    end
end

local function to_ring(lane)
    redis.call('zadd', RING, redis.call('incr', TURN), lane)
end

-- a lane that has a new job: into the ring (or a timer), unless it is in one place already
local function activate(lane, due)
    if redis.call('zscore', RING, lane) then return end
    if redis.call('sismember', P .. 'parked:' .. split(lane), lane) == 1 then return end
    local timer = redis.call('zscore', TIMERS, lane)
    if due <= now then
        if timer then redis.call('zrem', TIMERS, lane) end
        to_ring(lane)
    elseif not timer or due < tonumber(timer) then
        redis.call('zadd', TIMERS, due, lane)
    end
end

-- how many more of a lane's jobs its tenant's cap and its kind's let go (huge: no cap)
local function headroom(tenant, kind, lane)
    local free = math.huge
    if tenant_cap > 0 then free = tenant_cap - count('r:' .. tenant) end
    local cap = kind ~= '' and kind_caps[kind]
    if cap then free = math.min(free, cap - count('l:' .. lane)) end
    return free
end

local function unpark(tenant)
    if redis.call('sismember', PARKED, tenant) == 0 then return end
    local key = P .. 'parked:' .. tenant
    for _, lane in ipairs(redis.call('smembers', key)) do to_ring(lane) end
    redis.call('del', key)
    redis.call('srem', PARKED, tenant)
end

-- a dispatched job has ended: give its slot back, once
local function free(id)
    local lane = redis.call('hget', RUN, id)
    if not lane then return 0 end
    redis.call('hdel', RUN, id)
    local tenant, kind = split(lane)
    add('r:' .. tenant, -1)
    if kind ~= '' then add('l:' .. lane, -1) end
    unpark(tenant)
    return 1
end

-- the rate at which jobs end (per ms), an exponentially decaying average; `ended`: how many
-- more ended now (nil: none)
local function pace(ended)
    local got = redis.call('hmget', PACE, 'r', 't')
    local rate, at = tonumber(got[1] or '0'), tonumber(got[2] or now)
    rate = rate * math.exp(-math.max(0, now - at) / TAU)
    if ended then
        rate = rate + ended / TAU
        redis.call('hset', PACE, 'r', tostring(rate), 't', now)
    end
    return rate
end

-- move jobs onto the ARQ queue, a lane at a time in ring order, while the queue holds fewer
-- than the fleet runs plus the spare: what the fleet ends in spare_ms, so that ARQ finds the
-- next job the moment a slot frees, and a newcomer's job waits behind no more than that
local function dispatch()
    local capacity = tonumber(redis.call('get', P .. 'capacity') or '0')
    local spare = math.min(SPARE_FLEETS * capacity, math.max(1, math.ceil(pace() * spare_ms)))
    local room = capacity + spare - redis.call('zcard', queue)
    room = math.min(room, budget)
    if room <= 0 then return 0 end
    for _, lane in ipairs(redis.call('zrangebyscore', TIMERS, '-inf', now, 'limit', 0, 100)) do
        redis.call('zrem', TIMERS, lane)
        to_ring(lane)
    end
    local sent, visits = 0, 0
    while sent < room and visits < room + 500 do
        local popped = redis.call('zpopmin', RING)
        if #popped == 0 then break end
        visits = visits + 1
        local lane = popped[1]
        local wait = P .. 'wait:' .. lane
        local tenant, kind = split(lane)
        local free = headroom(tenant, kind, lane)
        -- a turn moves one job; a lane alone in the ring would take every turn until the room
        -- is used, so it takes them in one go
        local take = redis.call('zcard', RING) == 0 and room - sent or 1
        local due = redis.call('zrangebyscore', wait, '-inf', now,
                               'limit', 0, math.max(1, math.min(take, free)))
        if #due == 0 then
            -- nothing may start yet: the lane waits on a timer for its first job, or leaves
            local head = redis.call('zrange', wait, 0, 0, 'withscores')
            if #head > 0 then redis.call('zadd', TIMERS, head[2], lane) end
        elseif free <= 0 then
            redis.call('sadd', P .. 'parked:' .. tenant, lane)
            redis.call('sadd', PARKED, tenant)
        else
            local bodies = redis.call('hmget', BODY, unpack(due))
            redis.call('zrem', wait, unpack(due))
            redis.call('hdel', BODY, unpack(due))
            add('w', -#due)
            add('w:' .. tenant, -#due)
            local scored, owned = {}, {}
            for i, id in ipairs(due) do
                if bodies[i] then
                    redis.call('set', JOB .. id, bodies[i], 'px', job_ttl)
                    -- in turn order (ARQ takes equal scores by id), a little in the past (ARQ
                    -- skips a job whose score is ahead of its clock)
                    table.insert(scored, now - 1 + (sent + #owned / 2) / 1000)
                    table.insert(scored, id)
                    table.insert(owned, id)
                    table.insert(owned, lane)
                end
            end
            if #owned > 0 then
                redis.call('zadd', queue, unpack(scored))
                redis.call('hset', RUN, unpack(owned))
                add('r:' .. tenant, #owned / 2)
                if kind ~= '' then add('l:' .. lane, #owned / 2) end
                sent = sent + #owned / 2
            end
            if redis.call('exists', wait) == 1 then to_ring(lane) end
        end
    end
    return sent
end

if op == 'enqueue' then
    -- jobs as (id, lane, time it may start, ARQ body); one that is waiting, on the ARQ queue,
    -- running or has a result already is left alone
    local added = 0
    for i = arg0, #ARGV, 4 do
        local id, lane, due = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
        if redis.call('exists', JOB .. id, RESULT .. id) == 0
                and redis.call('hsetnx', BODY, id, ARGV[i + 3]) == 1 then
            redis.call('zadd', P .. 'wait:' .. lane, due, id)
            add('w', 1)
            add('w:' .. split(lane), 1)
            activate(lane, due)
            added = added + 1
        end
    end
    return {added, dispatch()}
elseif op == 'withdraw' then
    -- (lane, job ids): canceled before they went, they leave the lane; the lane leaves the ring
    -- when dispatch next finds it empty
    local lane = ARGV[arg0]
    local tenant = split(lane)
    local taken = 0
    for i = arg0 + 1, #ARGV do
        if redis.call('zrem', P .. 'wait:' .. lane, ARGV[i]) == 1 then
            redis.call('hdel', BODY, ARGV[i])
            add('w', -1)
            add('w:' .. tenant, -1)
            taken = taken + 1
        end
    end
    return {taken, dispatch()}
elseif op == 'dispatch' then
    return {0, dispatch()}
elseif op == 'finished' then
    -- ARQ has ended these jobs' runs: gone from its queue means ended for good; still there
    -- means ARQ runs it again (a Retry, or its worker stopped mid-run), and it keeps its slot
    local freed = 0
    for i = arg0, #ARGV do
        if not redis.call('zscore', queue, ARGV[i]) and free(ARGV[i]) == 1 then
            freed = freed + 1
        end
    end
    if freed > 0 then pace(freed) end
    return {freed, dispatch()}
elseif op == 'retire' then
    -- these jobs' runs are over in Postgres (their items ended, or have new jobs): ARQ must
    -- not run them, and their slots are free
    local freed = 0
    for i = arg0, #ARGV do
        redis.call('zrem', queue, ARGV[i])
        redis.call('del', JOB .. ARGV[i])
        freed = freed + free(ARGV[i])
    end
    return {freed, dispatch()}
elseif op == 'sweep' then
    -- a dispatched job that ARQ neither queues nor runs ended without telling (ARQ dropped it
    -- before it ran, or its worker died between ending it and telling); and parked tenants
    -- under their cap go back in the ring
    local freed = 0
    local run = redis.call('hgetall', RUN)
    for i = 1, #run, 2 do
        local id = run[i]
        if not redis.call('zscore', queue, id) and redis.call('exists', IN_PROGRESS .. id) == 0 then
            freed = freed + free(id)
        end
    end
    for _, tenant in ipairs(redis.call('smembers', PARKED)) do
        if tenant_cap == 0 or count('r:' .. tenant) < tenant_cap then unpark(tenant) end
    end
    return {freed, dispatch()}
elseif op == 'heartbeat' or op == 'leave' then
    -- (worker id, max_jobs, ttl ms): the fleet's capacity, kept by the workers' heartbeats
    local FLEET, SLOTS = P .. 'fleet', P .. 'slots'
    local id, ttl = ARGV[arg0], tonumber(ARGV[arg0 + 2])
    if op == 'heartbeat' then
        redis.call('zadd', FLEET, now + ttl, id)
        redis.call('hset', SLOTS, id, ARGV[arg0 + 1])
    else
        redis.call('zrem', FLEET, id)
        redis.call('hdel', SLOTS, id)
    end
    for _, gone in ipairs(redis.call('zrangebyscore', FLEET, '-inf', now)) do
        redis.call('zrem', FLEET, gone)
        redis.call('hdel', SLOTS, gone)
    end
    local total = 0
    for _, slots in ipairs(redis.call('hvals', SLOTS)) do total = total + tonumber(slots) end
    -- it lasts as long as the live worker whose heartbeat lasts longest (not the caller's ttl:
    -- a worker that beats with a short one would make the others' capacity lapse with it)
    local last = redis.call('zrange', FLEET, -1, -1, 'withscores')
    redis.call('set', P .. 'capacity', total, 'px', #last > 0 and math.max(1, last[2] - now) or ttl)
    return {0, dispatch()}
end
return redis.error_reply('unknown operation ' .. tostring(op))
