"""Validation of manifests: Kubernetes objects against the Kubernetes schema of a pinned
version (kubernetes-validate, strict: unknown fields refused), KEDA objects against
keda_schema.yaml (KEDA 2.15, written from its documentation; see there)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"  # the Kubernetes schema the base is checked against (kubernetes-validate)
KEDA_SCHEMA = yaml.safe_load((Path(__file__).parent / "keda_schema.yaml").read_text())


class Invalid(Exception):
    """A manifest that the API server (or KEDA) would refuse."""


def validate(doc: dict) -> None:
    """Raise :class:`Invalid` naming the first problem of ``doc``."""
    kind = doc.get("kind")
    if not str(doc.get("apiVersion", "")).startswith("keda.sh/"):
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            raise Invalid(str(exc)) from None
        return
    if kind not in ("ScaledObject", "TriggerAuthentication"):
        raise Invalid(f"KEDA kind {kind!r} is not in the schema")
    schema = {"$schema": KEDA_SCHEMA["$schema"], "$defs": KEDA_SCHEMA["$defs"], "$ref": f"#/$defs/{kind}"}
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if error is not None:
        raise Invalid(f"{'.'.join(map(str, error.absolute_path))}: {error.message}")
    least, most = doc["spec"].get("minReplicaCount", 0), doc["spec"].get("maxReplicaCount", 100)
    if kind == "ScaledObject" and least > most:  # KEDA's admission webhook refuses it
        raise Invalid(f"minReplicaCount {least} > maxReplicaCount {most}")
