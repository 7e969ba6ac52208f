"""Writing a batch: fenced, checked, acks last.

A batch's :class:`Outcome` is planned (pure, :func:`plan`) into

* global writes — outputs to streams of no camera we process, and dead letters — written
  first in one pipeline (events and dead letters are global streams; the action stage's
  events are idempotent through their own guard);
* one call of :data:`FENCED_WRITE` per camera — the camera's outputs (EOS markers too),
  its state (``Outcome.sets``) and its acks, all keys on the camera's hash slot. The script
  first checks that the camera's lease still holds this worker's fencing value, then
  writes, then acks: a failing XADD (OOM, a wrong type) raises inside the script before
  any XACK runs, so nothing is acked whose output was not written.

The per-camera calls go in one pipeline (on a Redis Cluster, one per node: a cluster
pipeline carries no scripts; a call that meets a moved slot is sent again through the
cluster client, which follows the redirection); each camera's result is one of ``ok``,
``fenced`` (the lease is no longer ours: nothing was written or acked) or the error.

Replication is asynchronous: a primary that dies right after a write may take it along
(its replica, promoted, never saw it). ``wait_replicas`` > 0 sends ``WAIT n ms`` after the
calls on each node, which returns once ``n`` replicas have the writes (or after ``ms``):
it narrows that window at the cost of a replication round trip per batch; it cannot close it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import redis

from shared import keys, metrics
from shared.reading import Entry
from shared.redisio import TOPOLOGY_ERRORS, add_dead_letter, is_cluster, node_clients, refresh_topology

# KEYS[1] the lease; ARGV[1] the lease value we hold; then ops, each
#   X keyindex maxlen nfields f1 v1 ...   XADD, then trim to maxlen ('' for none) but never
#                                         past an entry a consumer group still needs
#   S keyindex value                      SET
#   A keyindex group nids id1 ...         XACK
# Returns 1, or {1, keyindex, kept, group, ...}: a stream kept `kept` entries over its bound
# because `group` has not read (or acked) them yet.
FENCED_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local function split(id)
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = split(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end
-- the oldest entry of `key` some group still needs (its oldest pending one, else the one after
-- its last delivered) and that group; nil when the stream has no group
local function oldest_needed(key)
  local need, who = nil, nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = {}
    for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
    local id
    if tonumber(info['pending']) > 0 then
      id = redis.call('XPENDING', key, info['name'])[2]
    else
      id = after(info['last-delivered-id'])
    end
    if need == nil or before(id, need) then need, who = id, info['name'] end
  end
  return need, who
end
-- trim `key` towards `maxlen` entries, removing only what every group has read and acked;
-- the entries kept over the bound and the group that needs them
local function bounded_trim(key, maxlen)
  local over = redis.call('XLEN', key) - maxlen
  if over <= 0 then return 0, nil end
  local need, who = oldest_needed(key)
  local head = redis.call('XRANGE', key, '-', need and ('(' .. need) or '+', 'COUNT', over + 1)
  local n = math.min(over, #head)
  if n > 0 then
    local minid = (n < #head) and head[n + 1][1] or after(head[n][1])
    redis.call('XTRIM', key, 'MINID', '~', minid)
  end
  return over - n, who
end
local i, n, kept = 2, #ARGV, {1}
while i <= n do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'X' then
    local args, nf = {key, '*'}, tonumber(ARGV[i + 3])
    for j = i + 4, i + 3 + 2 * nf do
      args[#args + 1] = ARGV[j]
    end
    redis.call('XADD', unpack(args))
    if ARGV[i + 2] ~= '' then
      local over, who = bounded_trim(key, tonumber(ARGV[i + 2]))
      if over > 0 then
        kept[#kept + 1], kept[#kept + 2], kept[#kept + 3] = tonumber(ARGV[i + 1]), over, who
      end
    end
    i = i + 4 + 2 * nf
  elseif op == 'S' then
    redis.call('SET', key, ARGV[i + 2])
    i = i + 3
  elseif op == 'A' then
    local nids = tonumber(ARGV[i + 3])
    redis.call('XACK', key, ARGV[i + 2], unpack(ARGV, i + 4, i + 3 + nids))
    i = i + 4 + nids
  else
    return redis.error_reply('fenced write: unknown op ' .. tostring(op))
  end
end
if #kept == 1 then return 1 end
return kept
"""

OK, FENCED = "ok", "fenced"


@dataclass
class Output:
    stream: str
    fields: dict
    maxlen: Optional[int] = None  # trimmed towards it, never past what a consumer group needs


@dataclass
class Outcome:
    """What ``handle`` made of a batch: outputs to write, entries to dead-letter, to ack."""

    outputs: list[Output] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    done: list[Entry] = field(default_factory=list)  # processed; acked after outputs land
    finished: dict[str, int] = field(default_factory=dict)  # camera -> frames, at end of stream
    sets: dict[str, str] = field(default_factory=dict)  # small per-camera state (SET key value)

    def cameras(self) -> set[str]:
        return {e.camera for e in self.done} | {e.camera for e, _ in self.dead}

    def only(self, cameras: set[str]) -> "Outcome":
        """The part of this outcome that belongs to ``cameras``."""
        return Outcome(
            outputs=[o for o in self.outputs if keys.hash_tag(o.stream) in cameras],
            dead=[(e, why) for e, why in self.dead if e.camera in cameras],
            done=[e for e in self.done if e.camera in cameras],
            finished={c: n for c, n in self.finished.items() if c in cameras},
            sets={k: v for k, v in self.sets.items() if keys.hash_tag(k) in cameras})


@dataclass
class CameraWrite:
    """One camera's fenced script call: KEYS and ARGV."""

    camera: str
    keys: list[str]
    args: list[Any]

    def key_index(self, key: str) -> int:
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key) + 1


@dataclass
class Plan:
    global_outputs: list[Output]
    global_sets: dict[str, str]
    dead: list[tuple[Entry, str]]
    cameras: dict[str, CameraWrite]


def plan(outcome: Outcome, stage: str, lease_values: dict[str, str]) -> Plan:
    """Split ``outcome`` into global writes and one fenced call per camera (pure).

    A key belongs to a camera when its hash tag is a camera of the batch's entries or one
    whose lease we hold; other keys are global."""
    cams = outcome.cameras() | set(lease_values)
    calls: dict[str, CameraWrite] = {}

    def call(camera: str) -> CameraWrite:
        if camera not in calls:
            calls[camera] = CameraWrite(camera, [keys.lease_key(stage, camera)],
                                        [lease_values.get(camera, "")])
        return calls[camera]

    globals_, global_sets = [], {}
    for o in outcome.outputs:
        cam = keys.hash_tag(o.stream)
        if cam not in cams:
            globals_.append(o)
            continue
        c = call(cam)
        c.args += ["X", c.key_index(o.stream), "" if o.maxlen is None else o.maxlen, len(o.fields)]
        for k, v in o.fields.items():
            c.args += [k, v]
    for key, value in outcome.sets.items():
        cam = keys.hash_tag(key)
        if cam not in cams:
            global_sets[key] = value
            continue
        c = call(cam)
        c.args += ["S", c.key_index(key), value]
    acks: dict[tuple[str, str], list[str]] = {}
    for entry in [*outcome.done, *(e for e, _ in outcome.dead)]:
        acks.setdefault((entry.camera, entry.stream), []).append(entry.id)
    for (cam, stream), ids in acks.items():
        c = call(cam)
        c.args += ["A", c.key_index(stream), stage, len(ids), *ids]
    return Plan(globals_, global_sets, list(outcome.dead), calls)


def execute_global(r: redis.Redis, p: Plan, stage: str, deadletter_maxlen: int) -> None:
    """Write the plan's global outputs and dead letters (raises on any error)."""
    if not p.global_outputs and not p.global_sets and not p.dead:
        return
    pipe = r.pipeline(transaction=False)
    for o in p.global_outputs:
        pipe.xadd(o.stream, o.fields, maxlen=o.maxlen, approximate=True)
    for key, value in p.global_sets.items():
        pipe.set(key, value)
    for entry, reason in p.dead:
        add_dead_letter(pipe, stage, entry.stream, entry.id, entry.fields, reason, deadletter_maxlen)
    pipe.execute()


def execute_fenced(r: redis.Redis, script, p: Plan, wait_replicas: int = 0,
                   wait_ms: int = 100) -> dict[str, Any]:
    """Run the per-camera fenced calls in one pipeline per node: camera -> ``ok``,
    ``fenced`` or the exception the camera's call raised (nothing after the failing command
    ran). ``wait_replicas``: WAIT for that many replicas (at most ``wait_ms``) on each node;
    the smallest count acknowledged is under :data:`REPLICATED` (absent without WAIT)."""
    if not p.cameras:
        return {}
    order = sorted(p.cameras)
    if is_cluster(r):
        groups = node_clients(r, order, lambda cam: p.cameras[cam].keys[0])
    else:
        groups = [(r, order)]
    out: dict[str, Any] = {}
    for client, cams in groups:
        got = _execute_node(r, client, script, p, cams, wait_replicas, wait_ms)
        if REPLICATED in got and REPLICATED in out:
            got[REPLICATED] = _fewer(out[REPLICATED], got[REPLICATED])
        if BEHIND in got and BEHIND in out:
            got[BEHIND] = {**out[BEHIND], **got[BEHIND]}
        out.update(got)
    return out


REPLICATED = "*replicated"  # in execute_fenced's result (no camera id starts with '*'): WAIT's count
BEHIND = "*behind"  # in execute_fenced's result: {stream: (entries kept over its bound, group needing them)}

log = logging.getLogger(__name__)


class BehindReport:
    """Streams kept over their bound for a consumer group that is behind (not trimmed: no
    loss; :data:`BEHIND`): the gauge, and a warning at most once a minute per stream; back to
    0 once a write of the stream keeps nothing over."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.warned: dict[str, tuple[float, str]] = {}  # stream -> (last warned, group): over its bound

    def __call__(self, behind: dict[str, tuple[int, str]], written: set[str]) -> None:
        now = time.monotonic()
        for stream in (set(self.warned) & written) - set(behind):
            metrics.STREAM_BEHIND.labels(stream, self.warned.pop(stream)[1]).set(0)
        for stream, (kept, group) in behind.items():
            metrics.STREAM_BEHIND.labels(stream, group).set(kept)
            if now - self.warned.get(stream, (-60.0, group))[0] >= 60.0:
                self.warned[stream] = (now, group)
                log.warning("%s: %s holds %d entries over its bound for group %r, which has not read "
                            "them yet: kept (not trimmed); start or scale that consumer", self.worker_id,
                            stream, kept, group)


def _fewer(a: Any, b: Any) -> Any:
    """The smaller of two WAIT replies (an error counts as none)."""
    return min(a if isinstance(a, int) else 0, b if isinstance(b, int) else 0)


def _execute_node(r, client, script, p: Plan, cams: list[str], wait_replicas: int, wait_ms: int
                  ) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    for cam in cams:
        c = p.cameras[cam]
        script(keys=c.keys, args=c.args, client=pipe)
    if wait_replicas > 0:
        pipe.execute_command("WAIT", wait_replicas, wait_ms)
    try:
        results = pipe.execute(raise_on_error=False)
    except TOPOLOGY_ERRORS:
        refresh_topology(r)
        raise
    out: dict[str, Any] = {}
    if wait_replicas > 0:
        acked = results.pop()
        out[REPLICATED] = acked if isinstance(acked, Exception) else int(acked)
    for cam, res in zip(cams, results):
        if isinstance(res, redis.exceptions.AskError) and client is not r:
            refresh_topology(r)  # the slot moved (failover): once more through the cluster client
            try:
                res = script(keys=p.cameras[cam].keys, args=p.cameras[cam].args)
            except redis.RedisError as exc:
                res = exc
        if isinstance(res, Exception):
            out[cam] = res
        elif isinstance(res, list):  # ok, some stream kept entries over its bound for a group
            out[cam] = OK
            behind = out.setdefault(BEHIND, {})
            for j in range(1, len(res) - 2, 3):
                behind[p.cameras[cam].keys[int(res[j]) - 1]] = (int(res[j + 1]), _text(res[j + 2]))
        else:
            out[cam] = OK if int(res) == 1 else FENCED
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
