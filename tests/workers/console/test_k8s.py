"""`actionstream k8s`: producer Deployments and KEDA ScaledObjects made from a cameras file;
every output is checked against the Kubernetes and KEDA schemas (tests/deploy/schemas.py)."""

from __future__ import annotations

import pytest
import yaml

from shared import keys
from shared.settings import Camera
from tests.deploy.schemas import validate
from workers.console import cli
from workers.console.k8s import K8sError, ScalePlan, producers, scaled_objects

CAMS = ["cam-1", "cam-2", "lobby", "hall-2"]


def so(docs: list[dict], stage: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["labels"]["stage"] == stage]
    return doc


@pytest.mark.parametrize("cams, plan, trigger_type, server, extra, most", [
    (CAMS, ScalePlan(), "redis-streams", {"address": "redis.actionstream.svc:6379"}, {}, 4),
    (CAMS[:1], ScalePlan(), "redis-streams", {"address": "redis.actionstream.svc:6379"}, {}, 1),
    (CAMS, ScalePlan(max_replicas=2), "redis-streams", {"address": "redis.actionstream.svc:6379"}, {}, 2),
    (CAMS, ScalePlan(redis_address="r-0.r:6379,r-1.r:6379", cluster=True), "redis-cluster-streams",
     {"addresses": "r-0.r:6379,r-1.r:6379"}, {}, 4),
    (CAMS, ScalePlan(tls=True, database=3), "redis-streams", {"address": "redis.actionstream.svc:6379"},
     {"enableTLS": "true", "databaseIndex": "3"}, 4),
])
def test_scaled_objects(cams, plan, trigger_type, server, extra, most):
    docs = scaled_objects(cams, plan)
    for doc in docs:
        validate(doc)
    (auth,) = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"] == [  # KEDA is the Redis ACL user keda
        {"parameter": "username", "name": "actionstream-redis-users", "key": "keda-username"},
        {"parameter": "password", "name": "actionstream-redis-users", "key": "redis-keda"}]
    for stage, group, stream, lag, target in (
            ("pose", keys.POSE_GROUP, keys.frames_stream, plan.pose_lag, "actionstream-pose"),
            ("action", keys.ACTION_GROUP, keys.skeletons_stream, plan.action_lag, "actionstream-action")):
        spec = so(docs, stage)["spec"]
        assert spec["scaleTargetRef"] == {"name": target}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (plan.min_replicas, most)
        assert [t["metadata"] for t in spec["triggers"]] == [
            {**server, "stream": stream(c), "consumerGroup": group, "lagCount": str(lag),
             "activationLagCount": str(lag), **extra} for c in cams]
        assert {t["type"] for t in spec["triggers"]} == {trigger_type}
        assert {t["authenticationRef"]["name"] for t in spec["triggers"]} == {auth["metadata"]["name"]}


@pytest.mark.parametrize("cams, plan, error", [
    ([], ScalePlan(), "no cameras"),
    (["cam-1", "cam-1"], ScalePlan(), "cam-1 listed more than once"),
    (["cam 1"], ScalePlan(), "camera id 'cam 1' is invalid"),
    (CAMS, ScalePlan(pose_lag=0), "pose-lag must be 1 or more"),
    (CAMS, ScalePlan(max_replicas=0), "max-replicas must be 1 or more"),
    (CAMS, ScalePlan(min_replicas=3, max_replicas=2), "min-replicas 3 is above max-replicas 2"),
    (CAMS, ScalePlan(cluster=True, database=1), "a Redis Cluster has only database 0"),
    (CAMS, ScalePlan(redis_address="a:1,b:2"), "several Redis addresses need --cluster"),
    (CAMS, ScalePlan(redis_address="redis"), "is not host:port"),
    (CAMS, ScalePlan(redis_address="redis:port"), "is not host:port"),
    (CAMS, ScalePlan(redis_address="a:1,", cluster=True), "is not host:port"),
])
def test_scaled_objects_refuse_bad_input(cams, plan, error):
    with pytest.raises(K8sError, match=error):
        scaled_objects(cams, plan)


@pytest.mark.parametrize("camera, name, args", [
    (Camera(id="cam-1", source="rtsp://c1/s"), "actionstream-producer-cam-1",
     ["--source", "rtsp://c1/s", "--mode", "live"]),
    (Camera(id="Hall_2.b", source="rtsp://h/s", crop=(320, 0, 320, 240), fps=15, width=640, mode="replay"),
     "actionstream-producer-hall-2-b",
     ["--source", "rtsp://h/s", "--crop", "320,0,320,240", "--fps", "15", "--width", "640",
      "--mode", "replay"]),
])
def test_producers(camera, name, args):
    (doc,) = producers([camera])
    validate(doc)
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["produce", "--camera", camera.id] + args
    assert doc["metadata"]["name"] == name
    assert doc["spec"]["selector"]["matchLabels"]["camera"] == camera.id
    assert doc["spec"]["replicas"] == 1
    # the Redis ACL user producer, its password from the Secret (never in the manifest)
    assert container["envFrom"] == [{"configMapRef": {"name": "actionstream"}}]
    assert container["env"] == [
        {"name": "ACTIONSTREAM_REDIS_USERNAME", "value": "producer"},
        {"name": "ACTIONSTREAM_REDIS_PASSWORD",
         "valueFrom": {"secretKeyRef": {"name": "actionstream-redis-users", "key": "redis-producer"}}}]


@pytest.mark.parametrize("ids, error", [
    (["cam-1", "CAM-1"], "both make the Deployment name 'actionstream-producer-cam-1'"),
    (["cam_"], "cannot be a Kubernetes label value"),
])
def test_producers_refuse_ids_kubernetes_cannot_take(ids, error):
    with pytest.raises(K8sError, match=error):
        producers([Camera(id=i, source="rtsp://x/s") for i in ids])


def test_the_command_writes_yaml_and_says_what_is_wrong(tmp_path, capsys):
    good = tmp_path / "cameras.yaml"
    good.write_text(yaml.safe_dump({"cameras": [{"id": "a", "source": "rtsp://a/s"}]}))
    assert cli.main(["k8s", "scaledobjects", "--cameras", str(good), "--pose-lag", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Generated by `actionstream k8s scaledobjects --cameras {good} --pose-lag 10`")
    docs = list(yaml.safe_load_all(out))
    assert so(docs, "pose")["spec"]["triggers"][0]["metadata"]["lagCount"] == "10"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"cameras": [{"id": "a"}]}))  # no source
    assert cli.main(["k8s", "producers", "--cameras", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("actionstream k8s producers: error: camera file")
    assert "cameras.0.source" in err[0]


def test_k8s_help_lists_its_commands(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["k8s", "--help"])
    assert done.value.code == 0
    listed = capsys.readouterr().out.split("commands:", 1)[1]
    for command in ("producers", "scaledobjects"):
        assert f"\n  {command} " in listed
