"""Rate limits, token budgets and token spend kept in Redis, so router and EPP replicas share them (``--state-url``).

The same token buckets as :class:`~llmd_kserve.governance.limits.RateLimiter`, computed by Lua scripts inside Redis
(one atomic step per admit and per settle, on Redis's clock, so every replica sees one bucket):

- ``llmd:<tenant>:rate:<key id>``: the requests-per-minute and tokens-per-minute buckets (level and time of each);
  it expires once both buckets would be full again (an absent hash reads as full buckets).
- ``llmd:<tenant>:spend:<key id>``: ``used`` tokens (no expiry: spent stays spent across restarts) and ``r:<replica>``,
  the tokens each replica has reserved for its requests in flight. A replica's reservations count while its
  liveness key ``llmd:_:replica:<id>`` lives (refreshed every few seconds); a replica that died is dropped from the
  sum once that key expires.

When Redis cannot be reached, :class:`FailurePolicy` decides: ``closed`` refuses (503, ``state_unavailable``),
``open`` admits unchecked. Every failed call is counted (``llmd_router_state_errors_total{op}``) and logged once
per outage. Settles that fail are kept (bounded) and written when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from llmd_kserve.errors import ConfigError
from llmd_kserve.governance.keys import VirtualKey
from llmd_kserve.governance.limits import RateLimited
from llmd_kserve.state_store import StateStore, StateUnavailable

Policy = Literal["closed", "open"]
REPLICA_TTL_MS = 15_000
"""A replica's reservations count this long after its last sign of life."""
HEARTBEAT_S = 3.0
"""Seconds between a replica's signs of life (which also write settles kept while Redis was unreachable)."""
MAX_PENDING_SETTLES = 10_000

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rpm, tpm, budget, reserve = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local me, live = ARGV[5], ARGV[6]
redis.call('SET', live .. me, '1', 'PX', ARGV[7])
if budget >= 0 then
  local h = redis.call('HGETALL', KEYS[2])
  local used, reserved = 0, 0
  for i = 1, #h, 2 do
    local f, v = h[i], tonumber(h[i + 1])
    if f == 'used' then used = v
    elseif string.sub(f, 1, 2) == 'r:' then
      local who = string.sub(f, 3)
      if who == me or redis.call('EXISTS', live .. who) == 1 then reserved = reserved + v
      else redis.call('HDEL', KEYS[2], f) end
    end
  end
  if used >= budget then return {'exhausted', tostring(used), '0'} end
  if reserve > budget - used - reserved then return {'budget', tostring(used), tostring(reserved)} end
end
local r = redis.call('HMGET', KEYS[1], 'rl', 'rt', 'tl', 'tt')
local ttl = 0
if tpm > 0 then
  local tl = tpm
  if r[3] then tl = math.min(tpm, tonumber(r[3]) + (now - tonumber(r[4])) * tpm / 60) end
  local need = math.max(math.min(reserve, tpm), 1e-9)
  if tl < need then return {'tpm', tostring((need - tl) * 60 / tpm), '0'} end
  r[3] = tl - reserve
  ttl = math.max(ttl, (tpm - r[3]) * 60 / tpm)
end
if rpm > 0 then
  local rl = rpm
  if r[1] then rl = math.min(rpm, tonumber(r[1]) + (now - tonumber(r[2])) * rpm / 60) end
  if rl < 1 then return {'rpm', tostring((1 - rl) * 60 / rpm), '0'} end
  redis.call('HSET', KEYS[1], 'rl', tostring(rl - 1), 'rt', tostring(now))
  ttl = math.max(ttl, (rpm - rl + 1) * 60 / rpm)
end
if tpm > 0 then redis.call('HSET', KEYS[1], 'tl', tostring(r[3]), 'tt', tostring(now)) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000) end
if reserve > 0 and (tpm > 0 or budget >= 0) then redis.call('HINCRBY', KEYS[2], 'r:' .. me, reserve) end
return {'ok', '0', '0'}
"""

_SETTLE = """
local tpm, reserved, used, me = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if reserved > 0 then
  if redis.call('HINCRBY', KEYS[2], 'r:' .. me, -reserved) <= 0 then redis.call('HDEL', KEYS[2], 'r:' .. me) end
end
if ARGV[5] == '0' then return 0 end
if used > 0 then redis.call('HINCRBY', KEYS[2], 'used', used) end
if tpm > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local r = redis.call('HMGET', KEYS[1], 'tl', 'tt')
  local tl = tpm
  if r[1] then tl = math.min(tpm, tonumber(r[1]) + (now - tonumber(r[2])) * tpm / 60) end
  tl = math.min(tpm, tl + reserved - used)
  redis.call('HSET', KEYS[1], 'tl', tostring(tl), 'tt', tostring(now))
  local ttl = math.max((tpm - tl) * 60 / tpm, redis.call('PTTL', KEYS[1]) / 1000)
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
end
return 0
"""


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What happens to a request when Redis cannot be reached: for keys with a token budget, and for keys with only
    rate limits (requests or tokens per minute)."""

    budget: Policy = "closed"
    rate: Policy = "closed"

    @classmethod
    def parse(cls, text: str) -> FailurePolicy:
        """``closed``, ``open`` (both kinds), or per kind: ``budget=closed,rate=open``."""
        text = text.strip()
        if text in ("closed", "open"):
            return cls(text, text)  # type: ignore[arg-type]
        kinds: dict[str, Any] = {}
        for part in text.split(","):
            kind, _, value = part.partition("=")
            if kind.strip() not in ("budget", "rate") or value.strip() not in ("closed", "open"):
                raise ConfigError(f"must be closed, open or budget=closed|open,rate=closed|open; got {text!r}",
                                  "state_failure_policy")
            kinds[kind.strip()] = value.strip()
        return cls(**kinds)


class SharedLimiter:
    """The async twin of ``RateLimiter`` on a :class:`StateStore`: ``admit`` reserves, ``settle`` charges."""

    def __init__(self, store: StateStore, policy: FailurePolicy = FailurePolicy()) -> None:
        self.store, self.policy = store, policy
        self.replica = secrets.token_hex(6)
        self._live = StateStore.key("_", "replica", "")
        self._admit = store.client.register_script(_ADMIT)
        self._settle = store.client.register_script(_SETTLE)
        self._pending: deque[tuple[VirtualKey, int, int]] = deque(maxlen=MAX_PENDING_SETTLES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def _keys(self, key: VirtualKey) -> list[str]:
        return [StateStore.key(key.tenant, "rate", key.id), StateStore.key(key.tenant, "spend", key.id)]

    async def admit(self, key: VirtualKey, reserve: int = 0) -> int:
        """Like ``RateLimiter.admit``; when Redis is unreachable, the failure policy: 503 or admitted unchecked (0)."""
        if key.rpm is None and key.tpm is None and key.token_budget is None:
            return 0
        self._start()
        reserve = max(0, reserve)
        args = (key.rpm or 0, key.tpm or 0, -1 if key.token_budget is None else key.token_budget, reserve,
                self.replica, self._live, REPLICA_TTL_MS)
        try:
            verdict, a, b = await self.store.call("admit", lambda: self._admit(keys=self._keys(key), args=args))
        except StateUnavailable:
            closed = self.policy.budget if key.token_budget is not None else self.policy.rate
            if closed == "closed":
                what = "token budget" if key.token_budget is not None else "rate limits"
                raise RateLimited(f"The shared governance state is unreachable, so this key's {what} cannot be "
                                  f"checked; request refused. Retry shortly.", "state_unavailable", 1.0, status=503,
                                  code_type="ServiceUnavailableError") from None
            return 0
        if verdict == "ok":
            return reserve if key.tpm is not None or key.token_budget is not None else 0
        if verdict == "exhausted":
            raise RateLimited(f"Token budget of this key exhausted ({a} of {key.token_budget} tokens used).",
                              "budget", None, code_type="insufficient_quota")
        if verdict == "budget":
            left = max(0, (key.token_budget or 0) - int(a) - int(b))
            raise RateLimited(
                f"This request may use up to {reserve} tokens (prompt + n x max_tokens); the key's token budget "
                f"has {left} left ({a} used, {b} reserved by requests in flight). "
                f"Lower max_tokens or wait for requests in flight.", "budget", None, code_type="insufficient_quota")
        limit = key.tpm if verdict == "tpm" else key.rpm
        kind = "Tokens" if verdict == "tpm" else "Requests"
        raise RateLimited(f"{kind}-per-minute limit of {limit} reached.", verdict, float(a))

    async def settle(self, key: VirtualKey, reserved: int, used: int) -> None:
        """Charge ``used`` tokens and give the rest of ``reserved`` back; kept for later when Redis is unreachable."""
        if reserved <= 0 and (used <= 0 or (key.tpm is None and key.token_budget is None)):
            return
        try:
            await self._write(key, reserved, used)
        except StateUnavailable:
            self._pending.append((key, reserved, used))

    def settle_soon(self, key: VirtualKey, reserved: int, used: int) -> None:
        """``settle`` from synchronous code (a refused or abandoned admission): runs as a task."""
        if reserved > 0 or used > 0:
            task = asyncio.get_running_loop().create_task(self.settle(key, reserved, used))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, key: VirtualKey, reserved: int, used: int) -> None:
        metered = "1" if key.tpm is not None or key.token_budget is not None else "0"
        args = (key.tpm or 0, max(0, reserved), max(0, used), self.replica, metered)
        await self.store.call("settle", lambda: self._settle(keys=self._keys(key), args=args))

    async def used(self, key: VirtualKey) -> int:
        """Tokens ``key`` has used (all replicas)."""
        v = await self.store.call("read", lambda: self.store.client.hget(self._keys(key)[1], "used"))
        return int(v or 0)

    def _start(self) -> None:
        if not self._stop.is_set() and (self._heartbeat is None or self._heartbeat.done()):
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """Keep this replica's reservations alive, and write settles that failed once Redis answers again."""
        live = self._live + self.replica
        while not self._stop.is_set():
            with contextlib.suppress(StateUnavailable):
                await self.store.call("heartbeat", lambda: self.store.client.set(live, "1", px=REPLICA_TTL_MS))
                while self._pending and not self._stop.is_set():
                    await self._write(*self._pending[0])
                    self._pending.popleft()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), HEARTBEAT_S)

    async def close(self) -> None:
        """Write what is pending (best effort), stop the heartbeat, close the connections."""
        self._stop.set()  # not cancel(): redis-py may turn a cancellation inside a call into a connection error
        if self._heartbeat is not None:
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.down = False  # one last try, now
        with contextlib.suppress(StateUnavailable):
            while self._pending:
                await self._write(*self._pending[0])
                self._pending.popleft()
        await self.store.close()
