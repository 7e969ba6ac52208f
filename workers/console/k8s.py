"""Kubernetes manifests made from a cameras file: producers, and KEDA autoscaling of the workers.

``actionstream k8s producers --cameras deploy/k8s/cameras.yaml`` writes a producer Deployment
per camera, each talking to Redis as the ACL user ``producer`` with its password from the Secret
``actionstream-redis-users``. ``actionstream k8s scaledobjects --cameras deploy/k8s/cameras.yaml``
writes a ``TriggerAuthentication`` (KEDA reads Redis as the ACL user ``keda``: its name and
password from that Secret) and one ``ScaledObject`` per stage.
KEDA's ``redis-streams`` scaler watches one stream and one consumer group per trigger, and the
streams are per camera (``actionstream:frames:{cam}`` read by the group ``pose``,
``actionstream:skeletons:{cam}`` by ``action``), so each ScaledObject has one trigger per
camera of the file.

Each trigger reads the group's ``lag`` (XINFO GROUPS: entries not yet delivered; Redis 7 or
later), not its pending list: the workers ack every batch once its output is written, so the
pending list holds at most one batch per camera however far behind a worker is, while the lag
is the backlog. KEDA asks the HPA for ``ceil(lag / lagCount)`` replicas per trigger and
the HPA takes the largest: the stage grows while any camera's backlog exceeds its target.
More replicas than cameras would hold nothing (one owner per camera per stage), so the most
is the number of cameras, capped by ``max_replicas``.

:func:`producers` and :func:`scaled_objects` are pure (cameras and a :class:`ScalePlan` in,
Kubernetes objects out); :func:`k8s_main` is the command line around them.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import yaml

from shared import keys
from shared.errors import UserError

if TYPE_CHECKING:
    from shared.settings import Camera

KEDA_API = "keda.sh/v1alpha1"
AUTH_NAME = "actionstream-redis"  # the TriggerAuthentication
# the Secret of the Redis ACL users' passwords (deploy/redis/users.acl), a key redis-<user> each
# (what shared.redis_acl renders the ACL file from), and keda-username: the user KEDA reads as
SECRET_NAME = "actionstream-redis-users"
CONFIG_NAME = "actionstream"  # the ConfigMap of the settings every process shares (ACTIONSTREAM_REDIS_URL)
KEDA_USER = "keda"
USERNAME_KEY = "keda-username"  # the Secret's key KEDA reads its Redis user name from
PASSWORD_KEY = f"redis-{KEDA_USER}"  # ... and its password
_ADDRESS_RE = re.compile(r"^[^:,\s]+:[0-9]{1,5}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
# stage -> (Deployment it scales, consumer group, stream of a camera)
STAGES = {
    "pose": ("actionstream-pose", keys.POSE_GROUP, keys.frames_stream),
    "action": ("actionstream-action", keys.ACTION_GROUP, keys.skeletons_stream),
}


class K8sError(UserError, ValueError):
    """Options that cannot make valid manifests (no cameras, a lag target below 1, ...)."""


@dataclass(frozen=True)
class ScalePlan:
    """How the stages scale. ``redis_address`` is resolved by the KEDA operator, which runs in
    its own namespace: give the Service's namespace (``redis.actionstream.svc:6379``)."""

    redis_address: str = "redis.actionstream.svc:6379"  # host:port; a comma list with cluster
    cluster: bool = False  # redis-cluster-streams (hash-tagged streams on several nodes)
    tls: bool = False
    database: int = 0  # the database of ACTIONSTREAM_REDIS_URL (always 0 on a Cluster)
    pose_lag: int = 30  # frames waiting per camera: 1 s at 30 fps (one keeping up has a few)
    action_lag: int = 60  # skeletons waiting per camera: 2 s at 30 fps
    min_replicas: int = 1
    max_replicas: int = 8
    polling_s: int = 15  # how often KEDA reads the lags
    scale_down_window_s: int = 300  # the highest wish of this window holds before scaling down

    def lag(self, stage: str) -> int:
        return self.pose_lag if stage == "pose" else self.action_lag

    def check(self) -> None:
        for name in ("pose_lag", "action_lag", "min_replicas", "max_replicas", "polling_s"):
            if getattr(self, name) < 1:
                raise K8sError(f"{name.replace('_', '-')} must be 1 or more, not {getattr(self, name)}")
        if self.min_replicas > self.max_replicas:
            raise K8sError(f"min-replicas {self.min_replicas} is above max-replicas {self.max_replicas}")
        if self.database < 0 or (self.cluster and self.database):
            raise K8sError(f"database {self.database}: a Redis Cluster has only database 0; a "
                           "server has 0 or more")
        if not all(_ADDRESS_RE.match(a) for a in self.redis_address.split(",")):
            raise K8sError(f"redis address {self.redis_address!r} is not host:port"
                           + (" (comma-separated)" if self.cluster else ""))
        if not self.cluster and "," in self.redis_address:
            raise K8sError("several Redis addresses need --cluster")


def trigger(stage: str, camera: str, plan: ScalePlan) -> dict:
    """The redis-streams trigger on one camera's input stream of ``stage``."""
    _, group, stream = STAGES[stage]
    meta = {"addresses" if plan.cluster else "address": plan.redis_address,
            "stream": stream(camera), "consumerGroup": group,
            "lagCount": str(plan.lag(stage)), "activationLagCount": str(plan.lag(stage))}
    if plan.tls:
        meta["enableTLS"] = "true"
    if plan.database:
        meta["databaseIndex"] = str(plan.database)
    return {"type": "redis-cluster-streams" if plan.cluster else "redis-streams",
            "metadata": meta, "authenticationRef": {"name": AUTH_NAME}}


def scaled_object(stage: str, cameras: Sequence[str], plan: ScalePlan) -> dict:
    deployment = STAGES[stage][0]
    most = max(plan.min_replicas, min(plan.max_replicas, len(cameras)))  # never below the least
    return {
        "apiVersion": KEDA_API, "kind": "ScaledObject",
        "metadata": {"name": deployment, "labels": {"app": "actionstream", "stage": stage}},
        "spec": {
            "scaleTargetRef": {"name": deployment},
            "pollingInterval": plan.polling_s,
            "cooldownPeriod": plan.scale_down_window_s,  # KEDA uses it only with minReplicaCount 0
            "minReplicaCount": plan.min_replicas,
            "maxReplicaCount": most,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": plan.scale_down_window_s,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}},
            "triggers": [trigger(stage, cam, plan) for cam in cameras],
        },
    }


def trigger_authentication() -> dict:
    """KEDA reads the lags as the Redis ACL user ``keda`` (XINFO GROUPS on the input streams only)."""
    return {"apiVersion": KEDA_API, "kind": "TriggerAuthentication",
            "metadata": {"name": AUTH_NAME, "labels": {"app": "actionstream"}},
            "spec": {"secretTargetRef": [
                {"parameter": "username", "name": SECRET_NAME, "key": USERNAME_KEY},
                {"parameter": "password", "name": SECRET_NAME, "key": PASSWORD_KEY}]}}


def redis_env(user: str) -> list[dict]:
    """The env of a container talking to Redis as the ACL user ``user``: its name, and its
    password from the key ``redis-<user>`` of the Secret (never the manifest's)."""
    return [{"name": "ACTIONSTREAM_REDIS_USERNAME", "value": user},
            {"name": "ACTIONSTREAM_REDIS_PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": f"redis-{user}"}}}]


def scaled_objects(cameras: Sequence[str], plan: ScalePlan = ScalePlan()) -> list[dict]:
    """The TriggerAuthentication and the pose and action ScaledObjects for ``cameras``."""
    plan.check()
    if not cameras:
        raise K8sError("no cameras: the ScaledObjects need one trigger per camera")
    for cam in cameras:
        try:
            keys.check_camera_id(cam)
        except ValueError as exc:
            raise K8sError(str(exc)) from None
    twice = sorted({c for c in cameras if list(cameras).count(c) > 1})
    if twice:
        raise K8sError(f"camera id(s) {', '.join(twice)} listed more than once")
    return [trigger_authentication()] + [scaled_object(stage, cameras, plan) for stage in STAGES]


def render(docs: Sequence[dict], command: str) -> str:
    """``docs`` as one YAML stream, headed by the command that made it."""
    head = f"# Generated by `{command}`; edit the cameras file and run it again.\n"
    return head + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def producer(camera: Camera) -> dict:
    """One camera's producer Deployment (``actionstream produce`` with the file's options)."""
    cam = camera.id
    if not _LABEL_RE.match(cam):
        raise K8sError(f"camera id {cam!r} cannot be a Kubernetes label value (at most 63 letters, "
                       "digits, '-', '_', '.', starting and ending with a letter or digit)")
    args = ["produce", "--camera", cam, "--source", camera.source]
    if camera.crop:
        args += ["--crop", ",".join(map(str, camera.crop))]
    if camera.fps:
        args += ["--fps", f"{camera.fps:g}"]
    if camera.width:
        args += ["--width", str(camera.width)]
    args += ["--mode", camera.mode or "live"]
    if camera.rules is not None:
        args += ["--rules", camera.rules.model_dump_json(exclude_none=True)]
    labels = {"app": "actionstream", "stage": "producer", "camera": cam}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": producer_name(cam), "labels": dict(labels)},
        "spec": {"replicas": 1,  # one producer per camera: it carries the camera's epoch
                 "selector": {"matchLabels": dict(labels)},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [{
                     "name": "producer", "image": "actionstream:latest", "args": args,
                     "envFrom": [{"configMapRef": {"name": CONFIG_NAME}}],
                     "env": redis_env("producer")}]}}},
    }


def producer_name(camera: str) -> str:
    return "actionstream-producer-" + camera.lower().replace("_", "-").replace(".", "-")


def producers(cameras: Sequence[Camera]) -> list[dict]:
    """A producer Deployment per camera; distinct ids that map to one name are refused."""
    names: dict[str, str] = {}
    for cam in cameras:
        other = names.setdefault(producer_name(cam.id), cam.id)
        if other != cam.id:
            raise K8sError(f"cameras {other!r} and {cam.id!r} both make the Deployment name "
                           f"{producer_name(cam.id)!r}; rename one")
    return [producer(cam) for cam in cameras]


def build_parser() -> argparse.ArgumentParser:
    d = ScalePlan()
    parser = argparse.ArgumentParser(prog="actionstream k8s", description="Kubernetes manifests made "
                                     "from a cameras file (as for `actionstream up --config`), as YAML.")
    sub = parser.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("producers", help="a producer Deployment per camera")
    p = sub.add_parser("scaledobjects", help="KEDA ScaledObjects (one redis-streams trigger per camera "
                       "and stage, on the consumer group's lag) and their TriggerAuthentication")
    for q in (pr, p):
        q.add_argument("--cameras", required=True, help="the cameras file")
        q.add_argument("--out", help="write here (default: standard output)")
    p.add_argument("--redis-address", default=d.redis_address, help="host:port of Redis as the KEDA "
                   f"operator reaches it (default {d.redis_address}); comma-separated with --cluster")
    p.add_argument("--cluster", action="store_true", help="Redis Cluster (redis-cluster-streams)")
    p.add_argument("--tls", action="store_true", help="Redis over TLS")
    p.add_argument("--database", type=int, default=d.database, help="database index (default 0)")
    p.add_argument("--pose-lag", type=int, default=d.pose_lag,
                   help=f"frames waiting per camera per pose replica (default {d.pose_lag})")
    p.add_argument("--action-lag", type=int, default=d.action_lag,
                   help=f"skeletons waiting per camera per action replica (default {d.action_lag})")
    p.add_argument("--min-replicas", type=int, default=d.min_replicas)
    p.add_argument("--max-replicas", type=int, default=d.max_replicas,
                   help="cap (default %(default)s); never more than the number of cameras")
    return parser


def _without_out(argv: list[str]) -> list[str]:
    """``argv`` less ``--out FILE``: the header names what made the content, not where it went."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--out="):
            skip = False
            continue
        skip = arg == "--out"
        if not skip:
            out.append(arg)
    return out


def _docs(args) -> list[dict]:
    from shared.settings import load_camera_file

    cameras = load_camera_file(args.cameras)
    if args.what == "producers":
        return producers(cameras)
    plan = ScalePlan(args.redis_address, args.cluster, args.tls, args.database, args.pose_lag,
                     args.action_lag, args.min_replicas, args.max_replicas)
    return scaled_objects([cam.id for cam in cameras], plan)


def k8s_main(argv: Optional[list[str]] = None) -> int:
    """``actionstream k8s producers|scaledobjects ...``; 2 with one line on stderr for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from shared.settings import SettingsError

    try:
        text = render(_docs(args), " ".join(["actionstream k8s"] + _without_out(argv)))
    except (K8sError, SettingsError) as exc:
        print(f"actionstream k8s {args.what}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0
