"""mobilenet_thin in PyTorch: weight import parity, targets, fine-tune loop, ONNX export."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path

torch = pytest.importorskip("torch", reason="fine-tuning needs the 'train' extra (torch, onnx)")
pytest.importorskip("onnx", reason="fine-tuning needs the 'train' extra (torch, onnx)")

from workers.offline.posetrain.finetune.network import MobilenetThin  # noqa: E402
from workers.pose.openpose import decode_output  # noqa: E402

SIZE = (128, 96)  # (W, H): small and fast


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def upstream():
    return shared_path("models", "mobilenet_thin.onnx")


@pytest.fixture(scope="module")
def coco_dir():
    return shared_path("data", "pose_gt", "coco")


def test_network_shapes_at_odd_sizes():
    net = MobilenetThin().eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 77, 123))
        stages = net.forward_stages(torch.zeros(1, 3, 64, 64))
    assert out.shape == (2, 57, 10, 16)
    assert len(stages) == 6 and stages[0][0].shape == (1, 38, 8, 8) and stages[0][1].shape == (1, 19, 8, 8)
    with pytest.raises(ValueError, match="unknown stage"):
        net.freeze(["stage7"])


def test_weight_import_matches_onnx_on_a_real_image(upstream, coco_dir):
    import onnxruntime as ort

    from workers.offline.posetrain.finetune.weights import pretrained

    net = pretrained(upstream).eval()
    img = cv2.imread(str(coco_dir / "000000000785.jpg"))
    sess = ort.InferenceSession(str(upstream), providers=["CPUExecutionProvider"])
    for w, h in ((216, 184), (217, 185)):  # a multiple of 8 and an odd size (TF SAME padding)
        x = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)[None]
        ref = sess.run(None, {"image:0": x})[0]
        with torch.no_grad():
            got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-3


def test_targets_decode_back_to_the_people(coco_dir):
    from workers.offline.posetrain.finetune.dataset import KeypointDataset

    ds = KeypointDataset(coco_dir / "test_coco.json", input_size=(432, 368))
    anns = json.loads((coco_dir / "test_coco.json").read_text())["annotations"]
    image, heat, paf, mask = ds[2]
    assert image.shape == (3, 368, 432) and heat.shape == (19, 46, 54) and paf.shape == (38, 46, 54)
    assert mask.shape == (1, 46, 54) and float(mask.min()) == 0.0  # an unlabelled person is masked
    humans = decode_output(torch.cat([heat, paf]).permute(1, 2, 0).numpy())
    want = sum(1 for a in anns if a["image_id"] == ds.images[2]["id"] and a["num_keypoints"] > 0)
    assert len(humans) == want


def _small_set(coco_dir, tmp_path, n=2):
    coco = json.loads((coco_dir / "test_coco.json").read_text())
    coco["images"] = coco["images"][:n]
    keep = {i["id"] for i in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    return path


def test_finetune_lowers_the_loss_and_exports_for_the_pose_worker(upstream, coco_dir, tmp_path):
    from workers.offline.posetrain.finetune.export import export_onnx
    from workers.offline.posetrain.finetune.train import FinetuneConfig, finetune, load_checkpoint
    from workers.offline.posetrain.finetune.weights import load_upstream_weights
    from workers.pose.adapters import load_pose_model

    cfg = FinetuneConfig(str(_small_set(coco_dir, tmp_path)), str(tmp_path / "run"), str(upstream),
                         image_root=str(coco_dir), input_size=SIZE, epochs=3, batch_size=2,
                         freeze=("backbone", "stage1"), progress=False)
    frozen_before = load_upstream_weights(MobilenetThin(), upstream)
    net, res = finetune(cfg)
    assert len(res.step_losses) == 3 and res.step_losses[-1] < res.step_losses[0]
    assert min(res.val_loss) < res.initial_val_loss and res.best.is_file() and res.last.is_file()
    for name in ("backbone", "stage1"):  # frozen stages did not move
        for a, b in zip(net.stage_module(name).parameters(), frozen_before.stage_module(name).parameters()):
            assert torch.equal(a, b)
    assert not torch.equal(net.stages[5].L2[4].pointwise.bias, frozen_before.stages[5].L2[4].pointwise.bias)
    best = load_checkpoint(res.best)
    assert torch.equal(best.stages[5].L2[4].pointwise.bias, net.stages[5].L2[4].pointwise.bias)
    path = export_onnx(net, tmp_path / "ft.onnx", SIZE)
    model = load_pose_model("mobilenet_thin", path, threads=1)
    people = model.infer([cv2.imread(str(coco_dir / "000000000785.jpg"))])
    assert len(people) == 1 and all(p.keypoints.shape == (18, 3) for p in people[0])


def test_cli_finetune_one_step(upstream, coco_dir, tmp_path, capsys):
    from workers.offline.posetrain.posecli import pose_main

    train = _small_set(coco_dir, tmp_path, 1)
    argv = ["finetune", "--train", str(train), "--image-root", str(coco_dir), "--out", str(tmp_path / "o"),
            "--weights", str(upstream), "--input-size", "64x64", "--epochs", "1", "--max-steps", "1",
            "--freeze", "backbone,stage1,stage2,stage3", "--no-progress"]
    assert pose_main(argv) == 0
    out = capsys.readouterr().out
    assert "validation loss per image: before" in out and "keypoint AP / AP50 at 64x64" in out
    assert (tmp_path / "o" / "mobilenet_thin_ft.onnx").is_file()
