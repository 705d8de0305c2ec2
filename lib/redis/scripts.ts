/**
 * Lua run on the Redis server. Keys and semantics follow channels_redis 4.x: a channel is a sorted
 * set of messages scored by their send time (seconds, float); a group is a sorted set of channel
 * names scored by the time they were (last) added. Each script does atomically what channels_redis
 * does in several commands.
 */

/**
 * send. KEYS[1] channel key. ARGV: message, now, expiry cutoff (drop scores <= it), capacity,
 * key TTL in ms, then for a '!' channel the heartbeat key of its process (or '') and the
 * heartbeat cutoff. Returns 1 if added, 0 if the channel is full, 2 if its process is gone (a
 * heartbeat older than the cutoff: nobody will ever read the message).
 */
export const SEND = `
if ARGV[6] and ARGV[6] ~= '' then
  local beat = redis.call('GET', ARGV[6])
  if beat and tonumber(beat) <= tonumber(ARGV[7]) then
    return 2
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

/**
 * group_send, one call per host. KEYS: channel keys on this host. ARGV: one message per key, one
 * capacity per key, then now, expiry cutoff, key TTL in ms, then one heartbeat key per key ('' for
 * none) and the heartbeat cutoff (see SEND). Full channels are skipped silently.
 * Returns one flag per key: 1 added, 0 full, 2 its process is gone.
 */
export const GROUP_SEND = `
local n = #KEYS
local now = ARGV[2 * n + 1]
local cutoff = ARGV[2 * n + 2]
local ttl = ARGV[2 * n + 3]
local beat_cutoff = tonumber(ARGV[3 * n + 4] or '0')
local added = {}
for i = 1, n do
  local alive = ARGV[2 * n + 3 + i]
  local beat = nil
  if alive and alive ~= '' then beat = redis.call('GET', alive) end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)
  if beat and tonumber(beat) <= beat_cutoff then
    added[i] = 2
  elseif redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], now, ARGV[i])
    redis.call('PEXPIRE', KEYS[i], ttl)
    added[i] = 1
  else
    added[i] = 0
  end
end
return added
`;

/** group members. KEYS[1] group key. ARGV[1] cutoff: memberships added at or before it expired. */
export const GROUP_MEMBERS = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
`;

/** group_add. KEYS[1] group key. ARGV: channel, now, group TTL in ms. */
export const GROUP_ADD = `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

/**
 * Puts a message this process popped but could not hand over back into its channel with its
 * original score, so it keeps its place. KEYS[1] channel key. ARGV: key TTL in ms, score, message.
 * Gives the channel its TTL if it had none.
 */
export const PUT_BACK = `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
`;

/**
 * Moves messages a channels_redis receiver parked in its backup ('<key>$inflight') back into the
 * channel, keeping their scores: only the members named in ARGV[2..] (ones seen parked a whole
 * receive timeout earlier, so their receiver is gone). KEYS[1] channel, KEYS[2] backup, ARGV[1]
 * key TTL in ms. Returns how many moved.
 */
export const RESTORE_PARKED = `
local moved = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if score then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('ZADD', KEYS[1], score, ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return moved
`;

/** flush. ARGV[1] a KEYS pattern (the escaped prefix, then '*'). Deletes in batches. */
export const FLUSH = `
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
return #keys
`;

/**
 * receiveAny's oldest-first pick, and what the picker then knows. KEYS: channel keys. ARGV: empty,
 * or (a message a BZPOPMIN over the keys just took) key index (1-based), score, member, key TTL in
 * ms: that message goes back first, so that of two messages that arrived while the pop was blocked
 * the older one comes out. Pops the lowest-scored (oldest) message among the keys' heads and
 * returns {key index, member, score, then (key index, head score) of every key still holding
 * messages}, or nil when every key is empty. One atomic step, so two receivers never take the same
 * message; BZPOPMIN alone takes from the first non-empty key in argument order, not the oldest.
 * The heads let the picker take the next messages with POP_HEAD, one key each, instead of
 * looking at every key again (see head-cache.ts).
 */
export const POP_OLDEST = `
if ARGV[1] then
  local back = KEYS[tonumber(ARGV[1])]
  redis.call('ZADD', back, ARGV[2], ARGV[3])
  if redis.call('PTTL', back) == -1 then
    redis.call('PEXPIRE', back, ARGV[4])
  end
end
local best, bestScore
local heads = {}
for i = 1, #KEYS do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[2] then
    local score = tonumber(head[2])
    heads[#heads + 1] = i
    heads[#heads + 1] = head[2]
    if not bestScore or score < bestScore then
      best = i
      bestScore = score
    end
  end
end
if not best then
  return false
end
local popped = redis.call('ZPOPMIN', KEYS[best])
local reply = {best, popped[1], popped[2]}
for j = 1, #heads, 2 do
  local i = heads[j]
  local score = heads[j + 1]
  if i == best then
    score = redis.call('ZRANGE', KEYS[best], 0, 0, 'WITHSCORES')[2]
  end
  if score then
    reply[#reply + 1] = i
    reply[#reply + 1] = score
  end
end
return reply
`;

/**
 * Takes the head of one channel (the oldest message the picker knows of, see POP_OLDEST) if it is
 * no newer than the picker's mark. KEYS[1] channel key. ARGV[1] mark (a send time, seconds).
 * Returns {member, score[, score of the next head]}, 0 when the head is newer than the mark (left
 * in place: messages sent since the last full pick may be older elsewhere), nil when empty.
 */
export const POP_HEAD = `
local head = redis.call('ZRANGE', KEYS[1], 0, 1, 'WITHSCORES')
if not head[2] then
  return false
end
if tonumber(head[2]) > tonumber(ARGV[1]) then
  return 0
end
redis.call('ZREM', KEYS[1], head[1])
if head[4] then
  return {head[1], head[2], head[4]}
end
return {head[1], head[2]}
`;
