"""Durable events on a Redis Cluster: the events' primary dies while its replica is cut off.

A real ActionWorker (the shipped fall model, real URFD skeletons) runs on a real cluster
(3 primaries, 3 replicas). The replica of the events' primary (slot of ``{events}``) is
stopped (SIGSTOP) and its link dropped (``CLIENT KILL TYPE replica``), so nothing the primary
takes from then on reaches it; the primary is then SIGKILLed and the stale replica promoted.

- Without ``redis_wait_replicas`` the worker acknowledges its skeletons as soon as the
  primary took the events: the failover loses them for good (the control: it shows the
  scenario does lose events).
- With ``redis_wait_replicas=1`` the worker acknowledges nothing while ``WAIT`` sees no
  replica; after the failover its retries find the events' guards gone, write the events
  again, and confirm them once a new replica (an operator's replacement node) has them: every
  event of the undisturbed run is in the stream, none twice, and nothing is left to process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from redis.crc import key_slot

from shared import keys
from shared.redis_server import LocalCluster
from shared.redisio import connect, group_lag
from tests.integration import test_action_takeover as takeover
from tests.integration.test_durable_events import _unconfirmed
from tests.workers.action.realclips import shipped_classifier
from workers.action.worker import ActionWorker, rules_from_settings

pytestmark = pytest.mark.integration
CAM = takeover.CAM
EVENTS_SLOT = key_slot(keys.EVENTS_STREAM.encode())


@pytest.fixture(scope="module")
def classifier():
    return shipped_classifier()


@pytest.fixture
def cluster():
    with LocalCluster(primaries=3, replicas=1, node_timeout_ms=1000) as c:
        yield c


def _worker(url: str, classifier, name: str, wait_replicas: int) -> ActionWorker:
    settings = takeover._settings(url, 8).model_copy(update={"redis_wait_replicas": wait_replicas,
                                                             "redis_wait_ms": 50})
    return ActionWorker(settings, classifier, rules_from_settings(settings, classifier.card.labels),
                        cameras=[CAM], worker_id=name)


def _ids(rc) -> list[str]:
    return [json.loads(f[b"event"])["id"] for _, f in rc.xrange(keys.EVENTS_STREAM)]


def _cut_replica(cluster: LocalCluster) -> tuple[int, int]:
    """Stop the events' primary's replica and drop its link: (primary port, replica pid)."""
    primary = cluster.primary_port(EVENTS_SLOT)
    with cluster.client(primary) as c:
        replica_port = int(c.info("replication")["slave0"]["port"])
        pid = cluster.pid(replica_port)
        os.kill(pid, signal.SIGSTOP)
        c.execute_command("CLIENT", "KILL", "TYPE", "replica")
    return primary, pid


def _fail_over(cluster: LocalCluster, primary: int, replica_pid: int) -> int:
    """SIGKILL ``primary``, wake its stale replica and wait for it to take the slot: its port."""
    cluster.kill(primary)
    os.kill(replica_pid, signal.SIGCONT)
    deadline = time.monotonic() + 60  # a hang guard
    while True:
        try:
            promoted = cluster.primary_port(EVENTS_SLOT)
            if promoted != primary:
                return promoted
        except Exception:  # a node mid-failover
            pass
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.1)


def _undisturbed(cluster: LocalCluster, classifier) -> list[str]:
    rc = connect(cluster.url)
    takeover._load(rc)
    _worker(cluster.url, classifier, "action-u", 0).run(exit_on_eos=True)
    ids = _ids(rc)
    assert len(ids) >= 5
    takeover._load(rc)  # flushed, loaded again for the disturbed run
    return ids


def test_control_without_wait_the_failover_loses_acknowledged_events(cluster, classifier):
    undisturbed = _undisturbed(cluster, classifier)
    rc = connect(cluster.url)
    primary, replica = _cut_replica(cluster)
    _worker(cluster.url, classifier, "action-nowait", 0).run(exit_on_eos=True)
    assert sorted(_ids(rc)) == sorted(undisturbed)  # the primary took them all
    assert group_lag(rc, keys.skeletons_stream(CAM), keys.ACTION_GROUP) == 0  # and they were acked
    _fail_over(cluster, primary, replica)
    rc = connect(cluster.url)
    assert _ids(rc) == []  # the promoted replica never had them: lost for good


def test_with_wait_no_acknowledged_event_is_lost_or_doubled(cluster, classifier):
    undisturbed = _undisturbed(cluster, classifier)
    rc = connect(cluster.url)
    primary, replica = _cut_replica(cluster)
    worker = _worker(cluster.url, classifier, "action-wait", 1)
    start = _unconfirmed()
    thread = threading.Thread(target=worker.run, kwargs={"exit_on_eos": True}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a hang guard
    while not (_unconfirmed() >= start + 3 and rc.xlen(keys.EVENTS_STREAM) > 0):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    lag = group_lag(rc, keys.skeletons_stream(CAM), keys.ACTION_GROUP)
    assert lag > 0  # written on the primary, unconfirmed: the batch that made them is not acked

    promoted = _fail_over(cluster, primary, replica)
    cluster.add_replica(promoted)  # the operator replaces the dead node: WAIT can confirm again
    thread.join(timeout=300)
    assert not thread.is_alive(), "the worker did not finish after the failover"
    rc = connect(cluster.url)
    ids = _ids(rc)
    assert len(ids) == len(set(ids))  # none twice
    assert sorted(ids) == sorted(undisturbed)  # none lost
    assert group_lag(rc, keys.skeletons_stream(CAM), keys.ACTION_GROUP) == 0
