"""The Kubernetes base (deploy/k8s) as `kubectl apply -k` would apply it: every Kubernetes object
valid against the schema of a pinned Kubernetes version (kubernetes-validate, strict: unknown
fields refused), the KEDA objects against KEDA's schema (keda_schema.yaml beside this file), the
references between them resolved, and the generated files current. The negative cases show
that a broken manifest fails."""

from __future__ import annotations

import copy

import pytest
import yaml

from shared import keys
from shared.settings import load_camera_file
from tests.conftest import ROOT
from tests.deploy.kustomize import RenderError, build
from tests.deploy.schemas import Invalid, validate
from workers import k8s

BASE = ROOT / "deploy" / "k8s"
DELETE = object()


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return build(BASE)


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_base_holds_the_workers_producers_and_their_autoscaling(base):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base)
    cameras = [c.id for c in load_camera_file(BASE / "cameras.yaml")]
    assert ("Namespace", "actionstream") in kinds
    for name in ("actionstream-pose", "actionstream-action", "actionstream-alerts"):
        assert ("Deployment", name) in kinds
    assert [n for k, n in kinds if k == "ScaledObject"] == ["actionstream-action", "actionstream-pose"]
    assert [n for k, n in kinds if k == "TriggerAuthentication"] == [k8s.AUTH_NAME]
    assert len([n for k, n in kinds if n.startswith("actionstream-producer-")]) == len(cameras) > 1
    assert all(d["metadata"].get("namespace") == "actionstream" for d in base if d["kind"] != "Namespace")


def test_every_object_of_the_base_is_valid(base):
    problems = []
    for doc in base:
        try:
            validate(doc)
        except Invalid as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert problems == []


def test_every_manifest_file_is_in_the_base():
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml", "cameras.yaml"}
    assert files == listed


def test_references_resolve(base):
    deployments = {d["metadata"]["name"]: d for d in base if d["kind"] == "Deployment"}
    auths = {d["metadata"]["name"]: d for d in base if d["kind"] == "TriggerAuthentication"}
    secrets = {ref["secretRef"]["name"] for d in deployments.values()
               for c in d["spec"]["template"]["spec"]["containers"] for ref in c.get("envFrom", [])}
    assert secrets == {k8s.SECRET_NAME}
    for auth in auths.values():
        assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == secrets
    cameras = [c.id for c in load_camera_file(BASE / "cameras.yaml")]
    for command, group, stream in (("pose-worker", keys.POSE_GROUP, keys.frames_stream),
                                    ("action-worker", keys.ACTION_GROUP, keys.skeletons_stream)):
        (so,) = [d for d in base if d["kind"] == "ScaledObject"
                 and d["spec"]["triggers"][0]["metadata"]["consumerGroup"] == group]
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        assert target["spec"]["template"]["spec"]["containers"][0]["args"][0] == command
        assert "replicas" not in target["spec"]  # the autoscaler's: an apply must not reset it
        assert so["spec"]["maxReplicaCount"] <= len(cameras)
        triggers = so["spec"]["triggers"]
        assert {t["authenticationRef"]["name"] for t in triggers} <= set(auths)
        assert [t["metadata"]["stream"] for t in triggers] == [stream(c) for c in cameras]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {group}
        # the KEDA operator runs in its own namespace: the address must name ours
        assert all(".actionstream.svc:" in t["metadata"]["address"] for t in triggers)
    produced = sorted(c["args"][c["args"].index("--camera") + 1] for d in deployments.values()
                      if d["metadata"]["labels"].get("stage") == "producer"
                      for c in d["spec"]["template"]["spec"]["containers"])
    assert produced == sorted(cameras)


@pytest.mark.parametrize("what, out", [("producers", "producers.yaml"), ("scaledobjects", "keda.yaml")])
def test_generated_files_are_current(tmp_path, monkeypatch, what, out):
    monkeypatch.chdir(ROOT)
    made = tmp_path / out
    assert k8s.k8s_main([what, "--cameras", "deploy/k8s/cameras.yaml", "--out", str(made)]) == 0
    assert (BASE / out).read_text() == made.read_text(), f"run: actionstream k8s {what} " \
        f"--cameras deploy/k8s/cameras.yaml --out deploy/k8s/{out}"


def mutate(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path
    target = doc
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


POSE = ("ScaledObject", "actionstream-pose")
LAG = ("spec", "triggers", 0, "metadata", "lagCount")


@pytest.mark.parametrize("obj, path, value, error", [
    # Kubernetes objects, against the Kubernetes schema
    (("Deployment", "actionstream-producer-cam-1"), ("spec", "replicas"), "1",
     "'1' is not of type 'integer'"),
    (("Deployment", "actionstream-pose"), ("spec", "selector"), DELETE, "'selector' is a required property"),
    (("Deployment", "actionstream-action"), ("spec", "replica"), 2, "('replica' was unexpected)"),
    # KEDA objects, against KEDA's schema
    (POSE, ("spec", "maxReplicaCount"), "4", "'4' is not of type 'integer'"),
    (POSE, ("spec", "scaleTargetRef"), DELETE, "'scaleTargetRef' is a required property"),
    (POSE, ("spec", "triggers", 0, "type"), "redis-stream", "'redis-stream' is not one of"),
    (POSE, LAG, 30, "30 is not of type 'string'"),
    (POSE, ("spec", "triggers", 0, "metadata", "consumerGroup"), DELETE,
     "'consumerGroup' is a required property"),
    (POSE, ("spec", "triggers", 0, "metadata", "activationLagCount"), DELETE,
     "'activationLagCount' is a dependency of 'lagCount'"),
    (POSE, ("spec", "minReplicaCount"), 5, "minReplicaCount 5 > maxReplicaCount 4"),
    (POSE, ("spec", "maxReplicas"), 4, "('maxReplicas' was unexpected)"),
    (("TriggerAuthentication", k8s.AUTH_NAME), ("spec", "secretTargetRef", 0, "key"), DELETE,
     "'key' is a required property"),
])
def test_a_broken_manifest_fails(base, obj, path, value, error):
    doc = find(base, *obj)
    validate(doc)  # valid as it is: the failure below is the mutation's
    with pytest.raises(Invalid) as caught:
        validate(mutate(doc, path, value))
    assert error in str(caught.value)


@pytest.mark.parametrize("kustomization, files, error", [
    ({"commonLabels": {"team": "a"}}, {}, "not rendered by this renderer: ['commonLabels']"),
    ({"resources": ["missing.yaml"]}, {}, "resource missing.yaml is not a file"),
    ({"resources": ["ns.yaml"]}, {"ns.yaml": {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": "other"}}}, "kustomize would rename it"),
    ({"resources": ["a.yaml", "a.yaml"]}, {"a.yaml": {"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": "a"}}}, "listed twice"),
    ({"images": [{"name": "actionstream", "digest": "sha256:00"}]}, {}, "images fields not rendered"),
])
def test_the_renderer_refuses_what_it_does_not_render(tmp_path, kustomization, files, error):
    spec = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": "ns", "resources": ["d.yaml"], **kustomization}
    files = files or {"d.yaml": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                                 "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}}
    for name, doc in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(doc))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(RenderError, match=error.replace("[", r"\[").replace("]", r"\]")):
        build(tmp_path)


@pytest.mark.parametrize("image, rule, expected", [
    ("actionstream:latest", {"name": "actionstream", "newTag": "0.1.0"}, "actionstream:0.1.0"),
    ("actionstream", {"name": "actionstream", "newName": "reg:5000/as"}, "reg:5000/as"),
    ("reg:5000/as:1", {"name": "reg:5000/as", "newTag": "2"}, "reg:5000/as:2"),
    ("other:1", {"name": "actionstream", "newTag": "2"}, "other:1"),
])
def test_the_renderer_sets_images_and_namespace(tmp_path, image, rule, expected):
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "ns",
        "resources": ["d.yaml"], "images": [rule]}))
    (out,) = build(tmp_path)
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == expected
    assert out["metadata"]["namespace"] == "ns"

