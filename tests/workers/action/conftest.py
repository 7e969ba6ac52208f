"""Real ST-GCN ONNX models for the action-stage tests, exported once per session.

``stgcn_export`` (tests/conftest.py): the project's exporter CLI (``export_main``).
``sharp_models``: the same ST-GCN with its block convolutions scaled by sqrt(6) (like
``../shared/stgcn_vectors/highgain_seed3``), so that the input signal survives to the
outputs and a row mix-up or a wrong vote moves the probabilities well beyond float noise;
exported through ``export_onnx`` with a dynamic-T and a fixed-T card.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from workers.action.card import CardError, ModelCard, load_card, save_card

LABELS = ("walking", "falling", "sitting", "lying")
GAIN = math.sqrt(6.0)


@pytest.fixture(scope="session")
def sharp_models(tmp_path_factory) -> dict[str, Path]:
    """{"dynamic": path, "fixed": path}: one seeded high-gain ST-GCN, exported twice."""
    torch = pytest.importorskip("torch")
    model_mod = pytest.importorskip("workers.offline.stgcn.model")
    export_mod = pytest.importorskip("workers.offline.stgcn.export")
    model = model_mod.build_model(len(LABELS), layout="openpose", seed=3)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():  # BatchNorm statistics as a trained model has them
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=gen) + 0.5)
        for block in model.st_gcn_networks:
            block.gcn.conv.weight.mul_(GAIN)
            block.tcn[2].weight.mul_(GAIN)
    root = tmp_path_factory.mktemp("sharp")
    out = {}
    for kind, dynamic in (("dynamic", True), ("fixed", False)):
        card = ModelCard(name=f"sharp-{kind}", labels=LABELS, dynamic_t=dynamic)
        path = root / f"sharp-{kind}.onnx"
        export_mod.export_onnx(model, path, card)
        out[kind] = path
    return out


@pytest.fixture
def card_variant(tmp_path):
    """A function: ``(model_path, **changes) -> path`` of the model linked into a fresh
    folder beside a card changed by ``changes`` (a model without a card gets a plain one)."""
    count = iter(range(1000))

    def make(model_path: Path, **changes) -> Path:
        folder = tmp_path / f"variant{next(count)}"
        folder.mkdir()
        link = folder / "model.onnx"
        link.symlink_to(Path(model_path).resolve())
        try:
            card = load_card(model_path)
        except CardError:
            card = ModelCard(name="fake", labels=LABELS)
        save_card(dataclasses.replace(card, **changes), link)
        return link

    return make
