"""The model card that travels beside every action model (``model.onnx`` + ``model.json``).

The action worker loads any ST-GCN ONNX that has a card: the card says which labels the
outputs mean, which skeleton layout and how many persons the input has, the window length
and the frame rate it was trained at, and how its input was normalised.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import UserError

CARD_FORMAT = "actionstream-model-card"
CARD_VERSION = 1


class CardError(UserError, ValueError):
    """A model card is missing or malformed; the text names the field."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    labels: tuple[str, ...]
    layout: str = "openpose"  # a name in shared.skeleton.LAYOUTS
    window: int = 300  # T the model was trained on
    fps: float = 30.0
    num_person: int = 2  # M
    dynamic_t: bool = True  # the ONNX accepts any T that is a multiple of 4
    vote_last: int = 0  # output positions (of T/4) summed for the label; 0 = all
    # "stgcn": x/width - 0.5, y/height - 0.5, conf, missing joints 0 (the windows as they are);
    # "body": those centred and scaled by the track's body (workers.action.classifier)
    normalisation: str = "stgcn"
    input_name: str = "data"
    outputs: tuple[str, ...] = ("logits", "scores")
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    notice: str = ""
    format: str = CARD_FORMAT
    version: int = CARD_VERSION

    def to_json(self) -> str:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["outputs"] = list(self.outputs)
        return json.dumps(d, indent=2)


def card_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def save_card(card: ModelCard, model_path: str | Path) -> Path:
    path = card_path_for(model_path)
    path.write_text(card.to_json() + "\n")
    return path


def load_card(model_path: str | Path) -> ModelCard:
    path = card_path_for(model_path)
    if not path.is_file():
        raise CardError(f"model card {path} is missing (every action model needs one beside it)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CardError(f"model card {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != CARD_FORMAT:
        raise CardError(f"model card {path}: field 'format' must be {CARD_FORMAT!r}")
    if raw.get("version") != CARD_VERSION:
        raise CardError(f"model card {path}: unknown card version {raw.get('version')!r}")
    known = set(ModelCard.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CardError(f"model card {path}: unknown fields {unknown}")
    for name in ("name", "labels"):
        if name not in raw:
            raise CardError(f"model card {path}: field {name!r} is missing")
    labels = raw["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise CardError(f"model card {path}: field 'labels' must be a non-empty list of strings")
    raw["labels"] = tuple(labels)
    raw["outputs"] = tuple(raw.get("outputs", ("logits", "scores")))
    card = ModelCard(**raw)
    if card.window <= 0 or card.window % 4:
        raise CardError(f"model card {path}: field 'window' must be a positive multiple of 4")
    if card.num_person < 1:
        raise CardError(f"model card {path}: field 'num_person' must be at least 1")
    return card
