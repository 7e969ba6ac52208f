"""Benchmark: the streaming ST-GCN step graph against the windowed model.

    python tests/benchmarks/streaming_cost.py [--model workers/action/models/fall.onnx]
        [--tracks 16] [--repeats 7] [--threads 1] [--window T] [--no-full]
        [--detections DIR --labels ../shared/data/urfd/labels.csv
         --upfall-labels ../shared/data/upfall/labels.csv]

**Cost** (always): onnxruntime CPU, a batch of ``--tracks`` tracks. Streaming: one call of the
step graph (``<model>.step.onnx``, exported here into a temporary folder) per 4 frames, so
ms per frame = call / 4. Windowed: one call of the model on T-frame windows every
``--stride`` (15) frames, so ms per frame = call / 15, for T = 300 (the design's window) and
T = the card's window. Median of ``--repeats`` runs, the two kinds interleaved so that load
on the machine hits both alike. A ``full`` line does the same for the ten-block network (a
seeded export: cost does not depend on the weights).

**Parity and latency** (with ``--detections``, the fall-training clips of
``deploy/fall-training.yaml`` as ``actionstream stgcn fall-model`` loads them): every track
of every clip on the card's time grid, streamed; at every step end e (every 4 frames) with
at least ``--min-frames`` frames, the stream's probabilities against the classifier's on the
window of the last T frames ending at e; ``now``: the stream's scores at e, ``aligned``: at
e + delay (the positions of the same T frames). Two inputs: ``same input`` (each track
body-normalised once over its whole length, both models fed that: the difference is the
windowed model's zero padding alone) and ``deployed`` (the classifier's per-window body
normalisation vs the stream's causal one, :class:`workers.offline.stgcn.stepmodel.CausalBodyNorm`).
Latency and alerts: the action worker's rules on the stream's scores (every 4 frames) and on
its windows (stride 15, min_frames 32), figures as the fall-model CV computes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from workers.action.card import load_card  # noqa: E402
from workers.action.classifier import ActionClassifier, body_normalise, softmax, vote  # noqa: E402
from workers.offline.stgcn.stepmodel import StepModel, StreamingTracks  # noqa: E402
from workers.inference.sessions import create_session  # noqa: E402

STEP = 4


def export_step(model_path: Path, out_dir: Path, window: int | None = None) -> Path:
    from dataclasses import replace

    from workers.offline.stgcn.onnx_weights import stgcn_from_onnx
    from workers.offline.stgcn.continual import export_step_onnx

    card = load_card(model_path)
    if window:
        card = replace(card, window=window)
    out = out_dir / (model_path.stem + ".step.onnx")
    export_step_onnx(stgcn_from_onnx(model_path), card, out, model_path.name)
    return out


def export_full(out_dir: Path) -> Path:
    """A seeded ten-block ST-GCN (2 classes, M = 1), exported as the fall model is."""
    from workers.action.card import ModelCard
    from workers.offline.stgcn.export import export_onnx
    from workers.offline.stgcn.model import build_model

    path = out_dir / "full.onnx"
    export_onnx(build_model(2, seed=1), path, ModelCard(name="full", labels=("a", "b"), window=48,
                                                        num_person=1, dynamic_t=True))
    return path


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cost(model_path: Path, step_path: Path, args, label: str) -> None:
    card = load_card(model_path)
    win = create_session(model_path, providers=["CPUExecutionProvider"], threads=args.threads)
    step = StepModel(step_path, providers=["CPUExecutionProvider"], threads=args.threads)
    rng = np.random.default_rng(0)
    n, v, m = args.tracks, step.num_joints, card.num_person
    frames = (rng.standard_normal((n, 3, STEP, v, m)) * 0.3).astype(np.float32)
    state = step.initial_state(n)
    windows = {t: (rng.standard_normal((n, 3, t, v, m)) * 0.3).astype(np.float32)
               for t in sorted({300, card.window})}
    for _ in range(3):  # warm up
        step.run(frames, state)
        for x in windows.values():
            win.run(["scores"], {"data": x})
    s_times, w_times = [], {t: [] for t in windows}
    for _ in range(args.repeats):  # interleaved: load on the machine hits both alike
        s_times += timed(lambda: step.run(frames, state), 5)
        for t, x in windows.items():
            w_times[t] += timed(lambda: win.run(["scores"], {"data": x}), 1)
    s_ms = statistics.median(s_times) * 1e3 / STEP
    print(f"{label}: {n} tracks, {args.threads} thread(s): streaming step {s_ms * STEP:.2f} ms "
          f"per {STEP} frames = {s_ms:.3f} ms/frame")
    for t, ts in w_times.items():
        w_ms = statistics.median(ts) * 1e3 / args.stride
        print(f"{label}: windowed T={t}: {statistics.median(ts) * 1e3:.1f} ms per window every "
              f"{args.stride} frames = {w_ms:.3f} ms/frame; streaming is {w_ms / s_ms:.1f}x cheaper")


# -- parity and latency on real clips ----------------------------------------------------------------
def track_series(clip, fps: float) -> list:
    """Every track of ``clip`` as one window over its whole life on the card's time grid."""
    from workers.offline.stgcn.fall import make_windows

    cw = make_windows(clip, 10 ** 6, 10 ** 6, 1, 10 ** 6, 1, fps)
    for skel in clip.frames:
        cw.push(skel)
    return cw.flush()


def windowed_probs(session, series: np.ndarray, ends: list[int], window: int) -> np.ndarray:
    """The fall model on the last ``window`` frames ending at each of ``ends`` (inputs as given,
    no normalisation here), voted as the classifier votes."""
    out = []
    for e in ends:
        x = series[:, max(0, e - window + 1): e + 1]
        length = x.shape[1]
        t = -(-length // STEP) * STEP
        x = np.pad(x, ((0, 0), (0, t - length), (0, 0), (0, 0)))[None]
        (scores,) = session.run(["scores"], {"data": np.ascontiguousarray(x, dtype=np.float32)})
        out.append(softmax(vote(scores, np.array([length]))))
    return np.concatenate(out)


def stream_probs(step: StepModel, series: np.ndarray, size, normalise: bool) -> dict[int, np.ndarray]:
    """Step end frame -> the stream's probabilities; ``normalise``: the causal body norm."""
    tracks = StreamingTracks(step, normalise=normalise)
    out = {}
    for i in range(series.shape[1]):
        got = tracks.push({0: series[:, i]}, {0: size})
        if 0 in got:
            out[i] = got[0]
    return out


def parity(clips, model_path: Path, step_path: Path, args) -> dict:
    from dataclasses import replace

    from workers.offline.stgcn.fall import window_size

    card = replace(load_card(model_path), window=args.window or load_card(model_path).window)
    session = create_session(model_path, providers=["CPUExecutionProvider"], threads=args.threads)
    clf = ActionClassifier(model_path, providers=["CPUExecutionProvider"], threads=args.threads)
    step = StepModel(step_path, providers=["CPUExecutionProvider"], threads=args.threads)
    delay, rows = step.card.delay_frames, {k: [] for k in ("same/now", "same/aligned", "deployed/now",
                                                          "deployed/aligned")}
    series_of = {}
    for clip in clips:
        series_of[clip.name] = []
        for ref in track_series(clip, card.fps):
            size = window_size(ref, clip)
            data = ref.data
            ends = [e for e in range(STEP - 1, data.shape[1], STEP) if e + 1 >= args.min_frames]
            if not ends:
                continue
            same = body_normalise(data[None], [data.shape[1]], [size])[0]
            win_same = windowed_probs(session, same, ends, card.window)
            lengths = [min(e + 1, card.window) for e in ends]
            batch = np.zeros((len(ends), 3, card.window, data.shape[2], 1), np.float32)
            for i, e in enumerate(ends):
                batch[i, :, : lengths[i]] = data[:, e + 1 - lengths[i]: e + 1]
            win_dep = clf.classify(batch, lengths, [size] * len(ends))
            st_same, st_dep = stream_probs(step, same, size, False), stream_probs(step, data, size, True)
            series_of[clip.name].append((ref, ends, win_dep, st_dep))
            for name, win, st in (("same", win_same, st_same), ("deployed", win_dep, st_dep)):
                for i, e in enumerate(ends):
                    for when, at in (("now", e), ("aligned", e + delay)):
                        if at in st:
                            rows[f"{name}/{when}"].append((win[i], st[at], lengths[i] == card.window))
    print(f"parity: {sum(len(v) for v in series_of.values())} tracks of {len(clips)} clips, "
          f"T = {card.window}, delay {delay} frames")
    for key, r in rows.items():
        for subset, pick in (("all", r), ("full windows", [x for x in r if x[2]])):
            if not pick:
                continue
            w = np.array([x[0] for x in pick])
            s = np.array([x[1] for x in pick])
            d = np.abs(w - s)[:, -1]
            agree = float((w.argmax(1) == s.argmax(1)).mean())
            print(f"  {key:17s} {subset:12s} n={len(pick):6d}  |dp(falling)| max {d.max():.3f} "
                  f"median {np.median(d):.4f} p95 {np.quantile(d, 0.95):.3f}  label agreement {agree:.3f}")
    return series_of


def latency(clips, series_of: dict, model_path: Path, args) -> None:
    """The action worker's rules (threshold, consecutive, cooldown 10 s) on the stream's scores
    (one per 4 frames) and on the worker's windows (stride, min_frames), figures as the
    fall-model CV computes them (:mod:`workers.offline.stgcn.accuracy`)."""
    from dataclasses import replace

    from workers.offline.stgcn import accuracy as metrics
    from workers.offline.stgcn.fall import clip_windows, window_size

    card = replace(load_card(model_path), window=args.window or load_card(model_path).window)
    clf = ActionClassifier(model_path, providers=["CPUExecutionProvider"], threads=args.threads)
    scored: dict[str, dict[str, list]] = {"stream": {}, "windowed": {}}
    for clip in clips:
        rows = []
        for ref, _, _, st in series_of[clip.name]:
            span = max(ref.frames - 1, 1)
            for e in sorted(st):  # the step's last frame as a window end, in source seqs
                seq = ref.frame_start + round(e * (ref.frame_end - ref.frame_start) / span)
                rows.append((e, replace(ref, frame_end=seq, ts_end=ref.ts_start + e / card.fps), st[e]))
        rows.sort(key=lambda x: (x[1].ts_end, x[1].track_id))
        scored["stream"][clip.name] = [(r, p) for _, r, p in rows]
        refs = clip_windows(clip, card.window, args.stride, args.min_frames, num_person=1, fps=card.fps)
        probs = []
        if refs:
            batch = np.zeros((len(refs), 3, card.window, refs[0].data.shape[2], 1), np.float32)
            for i, r in enumerate(refs):
                batch[i, :, : r.frames] = r.data
            probs = clf.classify(batch, [r.frames for r in refs], [window_size(r, clip) for r in refs])
        scored["windowed"][clip.name] = list(zip(refs, probs))
    print("events under the worker's rules (cooldown 10 s), the shipped model on the clips it was "
          "trained on (in-sample: a runtime comparison, not a generalisation figure):")
    for consec in (1, 2):
        for kind, sc in scored.items():
            r = metrics.summarise(metrics.outcomes(clips, sc, card.labels, args.threshold, consec, 10.0))
            print(f"  {kind:8s} threshold {args.threshold}, {consec} consecutive: falls {r['detected']}/"
                  f"{r['falls']}, latency after the fall's last frame median {r['latency_median_s']} s "
                  f"max {r['latency_max_s']} s; false alerts {r['false_alerts']} in "
                  f"{r['negative_hours']:.3f} h of negatives, {r['false_before_fall']} before a fall")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "workers" / "action" / "models" / "fall.onnx"))
    p.add_argument("--tracks", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stride", type=int, default=15)
    p.add_argument("--min-frames", type=int, default=32)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--window", type=int, help="T of the stream and the windows (default: the card's)")
    p.add_argument("--no-full", action="store_true", help="skip the ten-block network's cost")
    p.add_argument("--detections")
    p.add_argument("--labels")
    p.add_argument("--upfall-labels")
    args = p.parse_args()
    model = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        step = export_step(model, Path(tmp), args.window)
        cost(model, step, args, f"{load_card(model).name} ({load_card(model).num_person} person)")
        if not args.no_full:
            full = export_full(Path(tmp))
            cost(full, export_step(full, Path(tmp)), args, "full ten-block network")
        if args.detections:
            from workers.offline.stgcn.fallcli import load

            clips = load(SimpleNamespace(detections=args.detections, labels=args.labels,
                                         upfall_labels=args.upfall_labels, skeletons=None))
            series_of = parity(clips, model, step, args)
            latency(clips, series_of, model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
