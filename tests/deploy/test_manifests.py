"""The Kubernetes base (deploy/k8s) as `kubectl apply -k` would apply it: every Kubernetes object
valid against the schema of a pinned Kubernetes version (kubernetes-validate, strict: unknown
fields refused), the KEDA objects against KEDA's schema (keda_schema.yaml beside this file), the
references between them resolved, and the generated files current. The negative cases show
that a broken manifest fails."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from shared import keys
from shared.settings import Settings, load_camera_file
from tests.conftest import ROOT
from tests.deploy.kustomize import RenderError, build
from tests.deploy.schemas import Invalid, validate
from workers.console import k8s

BASE = ROOT / "deploy" / "k8s"
DELETE = object()
ARCHIVE_CLAIM = "actionstream-archive"
CLAIMS = [ARCHIVE_CLAIM, "actionstream-history", "actionstream-redis"]  # the archive, the events, Redis
EXTERNAL_CLAIMS = {"actionstream-models"}  # the site's: the models (`actionstream models fetch`)


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
    for name in ("actionstream-pose", "actionstream-action", "actionstream-alerts", "actionstream-archive",
                 "actionstream-jobs-worker", "actionstream-web", "redis"):
        assert ("Deployment", name) in kinds
    assert [n for k, n in kinds if k == "PersistentVolumeClaim"] == CLAIMS
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
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for d in deployments.values()
               for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
               if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {k8s.SECRET_NAME}  # the Redis users' passwords (tests/deploy/test_closed_by_default.py)
    configs = {ref["configMapRef"]["name"] for d in deployments.values()
               for c in d["spec"]["template"]["spec"]["containers"] for ref in c.get("envFrom", [])}
    assert configs == {k8s.CONFIG_NAME} and ("ConfigMap", k8s.CONFIG_NAME) in \
        {(d["kind"], d["metadata"]["name"]) for d in base}
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
    claims = {d["metadata"]["name"] for d in base if d["kind"] == "PersistentVolumeClaim"}
    used = {v["persistentVolumeClaim"]["claimName"] for d in deployments.values()
            for v in d["spec"]["template"]["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
    assert used - EXTERNAL_CLAIMS == claims  # each claim of the base is used, each one used is there


UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(text) -> int:
    """The bytes of a Kubernetes storage quantity (``200Gi``, ``500M``, ``1073741824``)."""
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", str(text))
    if not found:
        raise ValueError(f"{text!r} is not a storage quantity")
    return int(float(found[1]) * UNITS[found[2]])


@pytest.mark.parametrize("text, expected, error", [
    ("200Gi", 200 * 2**30, None), ("500M", 500 * 10**6, None), ("1073741824", 2**30, None),
    ("1.5Ti", int(1.5 * 2**40), None), ("200GB", None, "not a storage quantity"),
    ("lots", None, "not a storage quantity"), ("", None, "not a storage quantity"),
])
def test_storage_quantities(text, expected, error):
    if error:
        with pytest.raises(ValueError, match=error):
            quantity(text)
    else:
        assert quantity(text) == expected


def running(docs: list[dict], command: str) -> dict:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"
              and d["spec"]["template"]["spec"]["containers"][0]["args"][0] == command]
    return dep


def archive_mount(dep: dict) -> tuple[str, bool, dict]:
    """(claim, read-only, env) of the volume mounted at the container's ACTIONSTREAM_ARCHIVE_DIR."""
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert "ACTIONSTREAM_ARCHIVE_DIR" in env, f"{dep['metadata']['name']}: no ACTIONSTREAM_ARCHIVE_DIR"
    path = env["ACTIONSTREAM_ARCHIVE_DIR"]
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(mounts) == 1, f"{dep['metadata']['name']}: nothing mounted at its ACTIONSTREAM_ARCHIVE_DIR"
    (volume,) = [v for v in pod.get("volumes", []) if v["name"] == mounts[0]["name"]]
    claim = volume.get("persistentVolumeClaim")
    assert claim, f"{dep['metadata']['name']}: the archive is not a PersistentVolumeClaim"
    return claim["claimName"], bool(mounts[0].get("readOnly") or claim.get("readOnly")), env


def check_archive(docs: list[dict], cameras: int) -> None:
    """One archiver (a second one is refused), replaced with Recreate, writing on a claim of the
    base big enough for every camera's retention; the jobs workers read that claim, on the
    archiver's node when only one node can mount it."""
    archiver, jobs = running(docs, "archive"), running(docs, "jobs-worker")
    assert archiver["spec"].get("replicas") == 1, "the archiver must have replicas: 1"
    assert archiver["spec"].get("strategy", {}).get("type") == "Recreate", "the archiver needs Recreate"
    name, read_only, env = archive_mount(archiver)
    assert not read_only, "the archiver's volume is read-only"
    jobs_claim, jobs_read_only, _ = archive_mount(jobs)
    assert jobs_claim == name, f"the jobs workers read {jobs_claim}, the archiver writes {name}"
    assert jobs_read_only, "the jobs workers only read the archive: mount it read-only"
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == name]
    modes = pvc["spec"]["accessModes"]
    assert set(modes) <= {"ReadWriteOnce", "ReadWriteMany"}, f"access modes {modes}"
    if "ReadWriteMany" not in modes:  # one node mounts it: the jobs workers go to the archiver's
        labels = archiver["spec"]["template"]["metadata"]["labels"]
        terms = (jobs["spec"]["template"]["spec"].get("affinity", {}).get("podAffinity", {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution", []))
        assert any(t["topologyKey"] == "kubernetes.io/hostname"
                   and t["labelSelector"]["matchLabels"].items() <= labels.items() for t in terms), \
            "ReadWriteOnce: the jobs workers must run on the archiver's node"
    per_camera = int(env.get("ACTIONSTREAM_ARCHIVE_MAX_BYTES", Settings().archive_max_bytes))
    size = quantity(pvc["spec"]["resources"]["requests"]["storage"])
    # retention runs every 5 minutes and never deletes the segments being written: 10 % above it
    assert size >= 1.1 * cameras * per_camera, f"{size} bytes < 1.1 x {cameras} cameras x {per_camera}"


def test_the_archive_has_one_archiver_and_the_jobs_workers_read_its_volume(base):
    check_archive(base, len(load_camera_file(BASE / "cameras.yaml")))


ARCHIVER = ("Deployment", "actionstream-archive")
JOBS = ("Deployment", "actionstream-jobs-worker")
ENV = ("spec", "template", "spec", "containers", 0, "env")
MOUNT = ("spec", "template", "spec", "containers", 0, "volumeMounts", 0)


@pytest.mark.parametrize("obj, path, value, cameras, error", [
    (ARCHIVER, ("spec", "replicas"), 2, 4, "replicas: 1"),
    (ARCHIVER, ("spec", "strategy"), {"type": "RollingUpdate"}, 4, "needs Recreate"),
    (ARCHIVER, MOUNT + ("readOnly",), True, 4, "the archiver's volume is read-only"),
    (ARCHIVER, MOUNT + ("mountPath",), "/data", 4, "nothing mounted at its ACTIONSTREAM_ARCHIVE_DIR"),
    (ARCHIVER, ENV, [], 4, "no ACTIONSTREAM_ARCHIVE_DIR"),
    (JOBS, MOUNT + ("readOnly",), False, 4, "mount it read-only"),
    (JOBS, ("spec", "template", "spec", "volumes", 0, "persistentVolumeClaim", "claimName"), "other", 4,
     "the jobs workers read other"),
    (JOBS, ("spec", "template", "spec", "affinity"), DELETE, 4, "run on the archiver's node"),
    (("PersistentVolumeClaim", ARCHIVE_CLAIM), ("spec", "accessModes"), ["ReadWriteOncePod"], 4,
     "access modes"),
    (("PersistentVolumeClaim", ARCHIVE_CLAIM), ("spec", "resources", "requests", "storage"), "100Gi", 4,
     "4 cameras x 42949672960"),
    (None, (), None, 5, "< 1.1 x 5 cameras x"),  # the base as it is with a fifth camera: too small
])
def test_a_broken_archive_fails_its_checks(base, obj, path, value, cameras, error):
    docs = [mutate(d, path, value) if (d["kind"], d["metadata"]["name"]) == obj else d for d in base]
    with pytest.raises(AssertionError, match=re.escape(error)):
        check_archive(docs, cameras)


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
    (("Deployment", "actionstream-archive"), ("spec", "strategy"), "Recreate", "'Recreate' is not of type"),
    (("PersistentVolumeClaim", ARCHIVE_CLAIM), ("spec", "accessMode"), ["ReadWriteOnce"],
     "('accessMode' was unexpected)"),
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

