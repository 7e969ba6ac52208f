"""What ``kubectl apply -k DIR`` would apply, for the few kustomization fields the base uses.

Neither kustomize nor kubectl installs from PyPI here, so the tests render the base with this:
``resources`` (files, in order), ``namespace`` (set on every namespaced object; a Namespace
object must carry that name) and ``images`` (``newName``/``newTag`` on containers whose image
name matches). Any other kustomization field, a folder among the resources or an object listed
twice is refused with :class:`RenderError`, so the base cannot use a feature this does not
render.
"""

from __future__ import annotations

from pathlib import Path

import yaml

FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}
IMAGE_FIELDS = {"name", "newName", "newTag"}
CLUSTER_SCOPED = {"Namespace"}


class RenderError(ValueError):
    """The kustomization uses what this renderer does not implement, or is broken."""


def build(folder: Path) -> list[dict]:
    """The objects of the kustomization in ``folder``, transformed as kustomize would."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - FIELDS
    if unknown:
        raise RenderError(f"kustomization fields not rendered by this renderer: {sorted(unknown)}")
    if spec.get("kind") != "Kustomization":
        raise RenderError(f"kind is {spec.get('kind')!r}, not Kustomization")
    docs = []
    for name in spec.get("resources", []):
        path = folder / name
        if not path.is_file():
            raise RenderError(f"resource {name} is not a file in {folder}")
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    _check_unique(docs)
    for doc in docs:
        _set_namespace(doc, spec.get("namespace"))
        for image in spec.get("images", []):
            _set_image(doc, image)
    return docs


def _check_unique(docs: list[dict]) -> None:
    seen = set()
    for doc in docs:
        ident = (doc.get("apiVersion"), doc.get("kind"), doc.get("metadata", {}).get("name"))
        if ident in seen:
            raise RenderError(f"{ident} is listed twice")
        seen.add(ident)


def _set_namespace(doc: dict, namespace: str | None) -> None:
    if namespace is None:
        return
    if doc["kind"] in CLUSTER_SCOPED:
        if doc["metadata"]["name"] != namespace:
            raise RenderError(f"Namespace {doc['metadata']['name']!r} is not the kustomization's "
                              f"namespace {namespace!r} (kustomize would rename it)")
        return
    doc["metadata"]["namespace"] = namespace


def _split(image: str) -> tuple[str, str | None]:
    """``registry:5000/name:tag`` -> (``registry:5000/name``, ``tag``)."""
    if "@" in image:
        raise RenderError(f"image {image!r}: digests are not rendered")
    slash = image.rfind("/")
    colon = image.rfind(":")
    return (image[:colon], image[colon + 1:]) if colon > slash else (image, None)


def _set_image(doc: dict, rule: dict) -> None:
    if set(rule) - IMAGE_FIELDS:
        raise RenderError(f"images fields not rendered: {sorted(set(rule) - IMAGE_FIELDS)}")
    pod = doc.get("spec", {}).get("template", {}).get("spec", {}) if doc["kind"] != "Pod" else doc["spec"]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, tag = _split(container["image"])
        if name == rule["name"]:
            tag = rule.get("newTag", tag)
            container["image"] = rule.get("newName", name) + (f":{tag}" if tag else "")
