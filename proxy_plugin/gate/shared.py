"""Rate limits and budgets shared by replicas: check-and-reserve in ONE Redis round trip, settle in a batch.

With ``state.backend: redis`` the gate admits a request with :func:`admit`: one Lua script
(:data:`ADMIT`, loaded once with ``register_script``) prunes the caller's sliding window,
checks rpm, tpm and requests in flight, checks every budget (spent plus reserved plus the
worst case within the limit), and reserves all of it, or refuses and reserves nothing.
The script runs atomically in Redis, on Redis's clock (``TIME``), so N replicas see one
window and one budget: rpm 30 across three replicas is 30.

Keys (under ``state.redis_prefix``): ``rl:req:<caller>`` (sorted set: request ids by
time), ``rl:tok:<caller>`` / ``rl:toka:<caller>`` (token reservations by time / amount, and the
window's running total in the field ``=``, so a check never sums the window),
``rl:flyz:<caller>`` (sorted set: request id by deadline: requests in flight, counted with
``ZCARD``), ``resv:<counter>`` (hash: request id -> amount reserved, and their running total
in the field ``=``) with ``resd:<counter>`` (sorted set: request id by deadline), and the
``counters`` hash (spend and budget periods, see ``state/redis.py``). Everything a
request holds has a deadline (:data:`HOLD_TTL`), so a replica that dies mid-request
frees its places and reservations when the deadline passes. No step reads every request
in flight or every reservation: an admission costs O(log n) plus what expired since the
last one, whatever the traffic (settles are sent in batches, so at a thousand requests a
second a hundred settled requests can wait in a batch at any moment).

Settling (:meth:`SharedHold.settle`) queues the :data:`SETTLE` script on the store's
batch: the answer never waits for it.
"""

from __future__ import annotations

import itertools
from typing import Any

from redis.exceptions import NoScriptError

from proxy_plugin.gate.budgets import budget_refusal, claims_of
from proxy_plugin.gate.clients import Client
from proxy_plugin.gate.controls import Controls, Hold
from proxy_plugin.gate.limits import WINDOW, _refusal, rate_headers
from proxy_plugin.state.redis import RedisStore

#: seconds a request's place in flight and its reservations last if its replica never settles them
HOLD_TTL = 900

# KEYS: counters, req, tok, toka, flyz, then per budget i: resv_i, resd_i
# ARGV: id, limited(0|1), rpm, tpm, parallel (-1: none), estimate, window, ttl, n, then name_i, amount_i, limit_i
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, limited = ARGV[1], ARGV[2] == '1'
local rpm, tpm, par = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local est, win, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local n = tonumber(ARGV[9])
local nreq, tsum, oldreq, oldtok = 0, 0, -1, -1
if limited then
  local cutoff = now - win
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  nreq = redis.call('ZCARD', KEYS[2])
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #first > 0 then oldreq = tonumber(first[2]) end
  -- the token window keeps its total in toka's field '=': what leaves the window is taken off it,
  -- so a check costs what expired since the last one, never the whole window
  if redis.call('HEXISTS', KEYS[4], '=') == 0 and redis.call('EXISTS', KEYS[4]) == 1 then
    local total = 0  -- a window written before the total was kept: summed once
    for _, a in ipairs(redis.call('HVALS', KEYS[4])) do total = total + (tonumber(a) or 0) end
    redis.call('HSET', KEYS[4], '=', total)
  end
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
    local out = 0
    for i = 1, #gone, 1000 do
      local part = {unpack(gone, i, math.min(i + 999, #gone))}
      for _, a in ipairs(redis.call('HMGET', KEYS[4], unpack(part))) do out = out + (tonumber(a) or 0) end
      redis.call('HDEL', KEYS[4], unpack(part))
    end
    redis.call('HINCRBYFLOAT', KEYS[4], '=', -out)
  end
  local firsttok = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #firsttok > 0 then
    oldtok = tonumber(firsttok[2])
    tsum = math.max(0, tonumber(redis.call('HGET', KEYS[4], '=') or '0'))
  elseif redis.call('HEXISTS', KEYS[4], '=') == 1 then
    redis.call('HSET', KEYS[4], '=', 0)  -- an empty window: drop the total's rounding drift
  end
  if rpm >= 0 and nreq >= rpm then
    return {1, tostring(oldreq + win - now), nreq, tostring(tsum), tostring(oldreq - now), tostring(oldtok - now)}
  end
  if tpm >= 0 and tsum + est > tpm then
    -- refused: the wait is until enough of the oldest reservations leave the window (read as far as needed)
    local over, wait, at = tsum + est - tpm, win, 0
    while over > 0 do
      local page = redis.call('ZRANGE', KEYS[3], at, at + 99, 'WITHSCORES')
      if #page == 0 then break end
      local ids = {}
      for i = 1, #page, 2 do ids[#ids + 1] = page[i] end
      local amounts = redis.call('HMGET', KEYS[4], unpack(ids))
      for i, a in ipairs(amounts) do
        over = over - (tonumber(a) or 0)
        if over <= 0 then wait = tonumber(page[2 * i]) + win - now; break end
      end
      at = at + 100
    end
    if est > tpm then wait = -1 end
    return {2, tostring(wait), nreq, tostring(tsum), tostring(oldreq - now), tostring(oldtok - now)}
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)  -- places whose replica never settled them
  if par >= 0 and redis.call('ZCARD', KEYS[5]) >= par then
    return {3, '1', nreq, tostring(tsum), tostring(oldreq - now), tostring(oldtok - now)}
  end
end
for i = 1, n do
  local name, amount, limit = ARGV[7 + 3 * i], tonumber(ARGV[8 + 3 * i]), tonumber(ARGV[9 + 3 * i])
  local resv, resd = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local spent = tonumber(redis.call('HGET', KEYS[1], name) or '0')
  local gone = redis.call('ZRANGEBYSCORE', resd, '-inf', now)  -- reservations past their deadline
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', resd, '-inf', now)
    local out = 0
    for j = 1, #gone, 1000 do
      local part = {unpack(gone, j, math.min(j + 999, #gone))}
      for _, a in ipairs(redis.call('HMGET', resv, unpack(part))) do out = out + (tonumber(a) or 0) end
      redis.call('HDEL', resv, unpack(part))
    end
    redis.call('HINCRBYFLOAT', resv, '=', -out)
  end
  local held = 0
  if redis.call('HLEN', resv) <= 1 then
    if redis.call('HEXISTS', resv, '=') == 1 then redis.call('HSET', resv, '=', 0) end  -- none held: no drift
  else
    held = math.max(0, tonumber(redis.call('HGET', resv, '=') or '0'))
  end
  if spent + held + amount > limit then
    return {4 + i - 1, tostring(spent), tostring(held)}
  end
end
for i = 1, n do
  local resv, resd = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  redis.call('HSET', resv, id, ARGV[8 + 3 * i])
  redis.call('HINCRBYFLOAT', resv, '=', ARGV[8 + 3 * i])
  redis.call('ZADD', resd, now + ttl, id)
  redis.call('EXPIRE', resv, ttl)
  redis.call('EXPIRE', resd, ttl)
end
if limited then
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('EXPIRE', KEYS[2], math.ceil(win) + 1)
  if tpm >= 0 then
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('HSET', KEYS[4], id, est)
    redis.call('HINCRBYFLOAT', KEYS[4], '=', est)
    redis.call('EXPIRE', KEYS[3], math.ceil(win) + 1)
    redis.call('EXPIRE', KEYS[4], math.ceil(win) + 1)
  end
  redis.call('ZADD', KEYS[5], now + ttl, id)
  redis.call('EXPIRE', KEYS[5], ttl)
end
return {0, '0', nreq, tostring(tsum), tostring(oldreq - now), tostring(oldtok - now)}
"""

# KEYS: counters, toka, flyz, then per budget i: resv_i, resd_i; ARGV: id, tokens (-1: no tpm), usd, n, name_1..name_n
SETTLE = """
local id = ARGV[1]
redis.call('ZREM', KEYS[3], id)
if ARGV[2] ~= '-1' then
  local old = redis.call('HGET', KEYS[2], id)
  if old then
    redis.call('HSET', KEYS[2], id, ARGV[2])
    redis.call('HINCRBYFLOAT', KEYS[2], '=', tonumber(ARGV[2]) - tonumber(old))
  end
end
local usd = tonumber(ARGV[3])
for i = 1, tonumber(ARGV[4]) do
  local resv, resd = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local held = redis.call('HGET', resv, id)
  if held then
    redis.call('HDEL', resv, id)
    local left = redis.call('HLEN', resv)
    if left == 1 then
      redis.call('HSET', resv, '=', 0)  -- only the total is left: none held, no rounding drift
    elseif left > 1 then
      redis.call('HINCRBYFLOAT', resv, '=', -tonumber(held))
    end
  end
  redis.call('ZREM', resd, id)
  if usd ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], ARGV[4 + i], ARGV[3]) end
end
return 0
"""


_HOLD_IDS = itertools.count(1)
_KEYS: dict[tuple[str, str], tuple[str, ...]] = {}  # (prefix, caller or budget counter) -> its keys, made once


def _keys(store: RedisStore, tag: str, name: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """``store.key(kind, name)`` for each of ``kinds``, made once per prefix and name (``tag`` tells callers from
    budgets apart); callers are client IPs under ``anonymous``, so the table is bounded."""
    keys = _KEYS.get((store.prefix, tag + name))
    if keys is None:
        if len(_KEYS) >= 4096:
            _KEYS.clear()
        keys = _KEYS[(store.prefix, tag + name)] = tuple(store.key(*kind.split(":"), name) for kind in kinds)
    return keys


def _caller_keys(store: RedisStore, caller: str) -> tuple[str, ...]:
    """The counters hash and a caller's window and in-flight keys, as :data:`ADMIT` takes them."""
    return (store.counters_key, *_keys(store, "c", caller, ("rl:req", "rl:tok", "rl:toka", "rl:flyz")))


def budget_keys(store: RedisStore, names: list[str]) -> list[str]:
    """Per budget counter: its reservations' hash and their deadlines' sorted set."""
    out: list[str] = []
    for name in names:
        out += _keys(store, "b", name, ("resv", "resd"))
    return out


class Scripts:
    """The two scripts, registered once per store."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.admit = store.register_script(ADMIT)
        self.settle = store.register_script(SETTLE)

    async def admit_request(self, controls: Controls, client: Client, body: dict[str, Any], calls: int = 1) -> Hold:
        """:func:`admit` with these scripts."""
        return await admit(controls, self, client, body, calls)

    async def run_admit(self, keys: list[str], args: list[Any]) -> Any:
        """:data:`ADMIT` on the store's lean lane (``state/lane.py``), else (or when Redis forgot it) redis-py's."""
        lane = self.store.lane
        if lane is not None:
            try:
                return await lane.evalsha(self.admit.sha, keys, args)
            except NoScriptError:
                pass  # a restarted Redis: redis-py's call loads the script again
        return await self.admit(keys=keys, args=args)


class SharedHold:
    """What a request reserved in Redis: settled by one queued :data:`SETTLE`."""

    __slots__ = ("budget_names", "caller", "id", "scripts", "tpm")

    def __init__(self, scripts: Scripts, rid: str, caller: str | None, tpm: bool, budget_names: list[str]) -> None:
        self.scripts, self.id, self.caller, self.tpm, self.budget_names = scripts, rid, caller, tpm, budget_names

    def settle(self, tokens: float, usd: float) -> None:
        """The request ended having used ``tokens`` and cost ``usd``: queue the settle (never awaited)."""
        store = self.scripts.store
        caller = self.caller or "-"
        counters, _, _, toka, flyz = _caller_keys(store, caller)
        keys = [counters, toka, flyz, *budget_keys(store, self.budget_names)]
        args = [self.id, tokens if self.tpm else -1, usd, len(self.budget_names), *self.budget_names]
        store.queue(self.scripts.settle, keys, args)


def _headers(limits: Any, nreq: int, tsum: float, estimate: float, oldreq: float, oldtok: float,
             taking: bool) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers (``limits.rate_headers``) from the script's view of the window."""
    return rate_headers(limits, nreq + (1 if taking else 0), tsum + (estimate if taking else 0.0),
                        oldreq + WINDOW if oldreq > -WINDOW and nreq else WINDOW if taking else 0.0,
                        oldtok + WINDOW if oldtok > -WINDOW and tsum else WINDOW if taking else 0.0)


async def admit(controls: Controls, scripts: Scripts, client: Client, body: dict[str, Any], calls: int = 1) -> Hold:
    """Check and reserve limits and budgets in one round trip; raise the refusal (``RedisDown``: apply the policy).

    ``calls``: as for :meth:`Controls.ask` (a composed request reserves for each call it may make).
    """
    ask = controls.ask(client, body, calls)
    store = scripts.store
    wall = controls.clock.wall()
    budgets = claims_of(ask.scopes, wall) if ask.scopes else []
    limits = ask.limits
    caller = ask.caller or "-"
    rid = f"{store.replica}{next(_HOLD_IDS):x}"  # unique across replicas: the replica's random id, then a count
    keys = [*_caller_keys(store, caller), *budget_keys(store, [name for name, _, _ in budgets])]
    args: list[Any] = [rid, 1 if ask.caller is not None else 0,
                       *(-1 if v is None else v for v in (limits.rpm, limits.tpm, limits.max_parallel)),
                       ask.estimate, WINDOW, HOLD_TTL, len(budgets)]
    for name, limit, _ in budgets:
        args += [name, repr(ask.worst), repr(limit)]
    reply = await store.call(lambda: scripts.run_admit(keys, args))
    code = int(reply[0])
    if code >= 4:
        i = code - 4
        raise budget_refusal(ask.scopes[i], budgets[i][2], float(reply[1]), float(reply[2]), ask.worst, wall)
    wait, nreq, tsum, oldreq, oldtok = float(reply[1]), int(reply[2]), float(reply[3]), float(reply[4]), float(reply[5])
    if code == 1:
        raise _refusal(f"{limits.rpm} requests per minute", wait,
                       _headers(limits, nreq, tsum, 0, oldreq, oldtok, False), "rpm")
    if code == 2:
        what = (f"this request may use {ask.estimate} tokens (prompt estimate plus max_tokens), more than the "
                f"{limits.tpm} tokens per minute allowed; lower max_tokens") if wait < 0 else \
            f"{limits.tpm} tokens per minute"
        raise _refusal(what, WINDOW if wait < 0 else wait, _headers(limits, nreq, tsum, 0, oldreq, oldtok, False),
                       "tpm")
    if code == 3:
        raise _refusal(f"{limits.max_parallel} requests in parallel", 1.0,
                       _headers(limits, nreq, tsum, 0, oldreq, oldtok, False), "parallel")
    headers = _headers(limits, nreq, tsum, ask.estimate, oldreq, oldtok, True) if ask.caller is not None else {}
    hold = Hold(controls, client, None, [], headers, ask.estimate, ask.worst)
    hold.shared = SharedHold(scripts, rid, ask.caller, limits.tpm is not None and ask.caller is not None,
                             [name for name, _, _ in budgets])
    return hold
