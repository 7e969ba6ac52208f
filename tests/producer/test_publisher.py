"""The one publisher (producer.publisher) in both of its uses: the producer's (no lease, the
hash's seq the next one, a trimmed stream, an end of stream per epoch) and the replay job's
(fenced by a lease, the seq the last one published, a count, one end of stream)."""

from __future__ import annotations

import pytest
import redis

from producer.publisher import ALREADY, NOT_OURS, PUBLISHED, Publisher
from shared.redisio import ensure_group

STREAM, STATE, LEASE = "t:{cam}:frames", "t:{cam}:state", "t:{cam}:lease"


def test_the_producers_use_refuses_what_was_published_and_trims(r):
    pub = Publisher(r, STREAM, STATE)
    assert pub.put({"seq": 0}, mark=1, maxlen=10) == PUBLISHED
    assert pub.put({"seq": 0}, mark=1, maxlen=10) == ALREADY  # a retried write adds nothing
    for seq in range(1, 250):  # MAXLEN ~ trims whole nodes (100 entries each by default)
        assert pub.put({"seq": seq}, mark=seq + 1, maxlen=10) == PUBLISHED
    assert r.xlen(STREAM) < 250 and r.hget(STATE, "seq") == b"250"
    assert pub.put({"kind": "eos"}, mark=250, eos="eos:1:250") == PUBLISHED
    assert pub.put({"kind": "eos"}, mark=250, eos="eos:1:250") == ALREADY
    assert pub.put({"kind": "eos"}, mark=250, eos="eos:2:250") == PUBLISHED  # a new epoch's end
    assert not r.hexists(STATE, "published")


def test_the_replay_jobs_use_is_fenced_and_counts(r):
    r.set(LEASE, "mine")
    pub = Publisher(r, STREAM, STATE, lease_key=LEASE, count_field="published")
    assert pub.put({"seq": 3}, mark=3, lease="mine") == PUBLISHED
    assert pub.put({"seq": 3}, mark=3, lease="mine") == ALREADY
    assert pub.put({"seq": 4}, mark=4, lease="theirs") == NOT_OURS
    assert pub.put({"kind": "eos"}, mark=None, eos="1", lease="mine") == PUBLISHED
    assert pub.put({"kind": "eos"}, mark=None, eos="1", lease="mine") == ALREADY
    assert r.hgetall(STATE) == {b"seq": b"3", b"published": b"1", b"eos": b"1"}
    assert r.xlen(STREAM) == 2


def test_a_failing_xadd_leaves_the_hash_as_it_was(r):
    r.set(STREAM, "not a stream")
    pub = Publisher(r, STREAM, STATE, count_field="published")
    with pytest.raises(redis.ResponseError):
        pub.put({"seq": 0}, mark=0)
    assert not r.exists(STATE)


def test_behind_names_the_groups_at_the_limit(r):
    pub = Publisher(r, STREAM, STATE)
    assert pub.behind(1) == {} and pub.behind(1, group="pose") == {}  # nobody consumes it
    for group in ("pose", "archive"):
        ensure_group(r, STREAM, group)
    for seq in range(3):
        pub.put({"seq": seq}, mark=seq + 1)
    r.xreadgroup("pose", "p1", {STREAM: ">"})
    r.xack(STREAM, "pose", *[i for i, _ in r.xrange(STREAM)])
    assert pub.behind(3) == {"archive": 3}
    assert pub.behind(3, group="pose") == {} and pub.behind(3, group="archive") == {"archive": 3}
