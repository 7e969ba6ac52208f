"""Capacity: live cameras one pose worker (then two) holds, against bare onnxruntime.

    python tests/benchmarks/capacity.py [--workers 1,2] [--fps 15] [--max-cameras 16]
        [--threads 1] [--providers CPUExecutionProvider] [--warmup 8] [--window 15]
        [--lag-limit 1.0] [--action] [--mix busy,day]
        [--configs movenet:off,movenet:on,movenet_int8:off,movenet_int8:on]

``--mix``: ``busy`` cameras see someone moving all the time (the loop below); ``day`` cameras
see a day-like loop of real footage where the subject moves a fifth of the time (4 s of UP-Fall
"walking") and stays put the rest (16 s from the middle of the same trial and view's
"standing", "sitting" or "laying", as they are: small movements, and in camera 2's view a
second person sitting; the "share gated" column says how still the loop really is).
``--configs``: pose model, its input size (``movenet@160``: ACTIONSTREAM_POSE_INPUT_SIZE) and
motion gating (``MODEL:on`` sets ACTIONSTREAM_MOTION_GATING)
for each climb; ``movenet_int8`` needs ``actionstream models quantize`` first. Each climb
also reports the pose worker's resident memory with one camera and with those held.

Real parts only: an embedded Redis (Valkey) on a free port; one producer process per camera
(the project's :class:`Producer` in live mode: MAXLEN ~, epoch, seq) looping a UP-Fall clip
pair at 640x480, 15 fps: the subject walking (the first seconds of an A06 "walking" clip)
then falling (an A01-A05 fall, same trial and camera), each camera its own pair; the pose
workers are the command users run (``python -m workers.console.cli pose-worker``), with MoveNet;
with ``--action`` the action worker runs too (shipped fall model).

Cameras are added one at a time. After ``--warmup`` seconds each step is measured for
``--window`` seconds, sampling every 0.5 s each worker's ``/metrics``: the live lag is
``actionstream_entry_age_seconds`` (how long the oldest entry of a camera's last batch
waited in its stream at the pose read, on the Redis server's clock, as the workers measure
it), the worst camera of each sample, median over the window; frames/s is the frames that
went through the model (``actionstream_inference_batch_size_sum``); frames offered is what
the producers added to the streams (XINFO STREAM entries-added). A step holds when the lag
(the median over the window and over its last 2 s) stays within ``--lag-limit`` and the
backlog (frames not yet acked) does not grow by 0.5 s of frames per camera over the window
(a worker falling behind, not yet 1 s late); the first step that does not ends the climb;
the most frames/s of any step is the saturated throughput (``max_lag_s`` is raised to 60 s,
so that past capacity the workers process every frame instead of skipping stale ones).

"Bare onnxruntime" is the ceiling: the same model file, providers and threads, one process
per worker running concurrently, model calls only (``model.runner``) on frames already
JPEG-decoded (the producers' own JPEGs) and preprocessed, one frame per call as the worker
does (MoveNet's graph takes batch 1). The ratio is saturated pipeline frames/s over bare.
On a machine shared with other work, wall-clock rates follow the CPU share each process
gets; the CPU time per frame (the pose workers' processes, all threads, against bare's) is
steadier, and its ratio is the throughput ratio where the cores are the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from producer.producer import Producer  # noqa: E402
from producer.sources import crop_and_resize, open_source  # noqa: E402
from shared import keys  # noqa: E402
from shared.redis_server import RedisServer  # noqa: E402
from shared.redisio import connect, group_lag  # noqa: E402
from shared.schemas import Frame  # noqa: E402
from shared.settings import load_settings, make_camera  # noqa: E402

UPFALL = ROOT.parent / "shared" / "data" / "upfall"
# camera i: (walking clip, fall clip) of one trial and camera view; 30 pairs, all different
PAIRS = [(f"A06-S01-T{1 + i % 3}-C{1 + i // 3 % 2}", f"A0{1 + i % 5}-S01-T{1 + i % 3}-C{1 + i // 3 % 2}")
         for i in range(30)]
WIDTH, HEIGHT = 640, 480
WALK_S = 4.0
STILL = ("A07", "A08", "A11")  # standing, sitting, laying: a day's still stretches
DAY_STILL_S = 4 * WALK_S  # a day-like loop: moving a fifth of the time
DAY_STILL_FROM_S = 12.0  # a still activity's stretch from its middle (sitting, lying, standing)
GROWTH_S = 0.5  # a backlog growing by this many seconds of frames per camera in a window: not held
METRIC = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$')


# ---------------------------------------------------------------- the frames of a camera

def clip_jpegs(path: Path, fps: float, quality: int, seconds: float | None = None) -> list[bytes]:
    """The clip resampled to ``fps`` (nearest frame in time), at 640x480, JPEG-encoded as the
    producer does (``--seconds``: only the first ones)."""
    src = open_source(str(path))
    n = int(src.frame_count * fps / src.fps)
    if seconds is not None:
        n = min(n, int(seconds * fps))
    wanted = [min(src.frame_count - 1, round(k * src.fps / fps)) for k in range(n)]
    out = []
    for i, img in enumerate(src.frames()):
        if i > wanted[-1]:
            break
        img = crop_and_resize(img, None, WIDTH)
        if img.shape[:2] != (HEIGHT, WIDTH):
            raise SystemExit(f"capacity: {path.name} gives {img.shape[1]}x{img.shape[0]} frames, "
                             f"not {WIDTH}x{HEIGHT}")
        jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        out += [jpeg] * wanted.count(i)
    src.close()
    return out


def camera_jpegs(index: int, fps: float, quality: int, mix: str = "busy") -> list[bytes]:
    """Camera ``index``'s loop: the subject walking, then falling (``busy``); or walking, then
    a still activity of the same trial and view for four times as long (``day``)."""
    walk, fall = PAIRS[index % len(PAIRS)]
    moving = clip_jpegs(UPFALL / f"{walk}.mp4", fps, quality, WALK_S)
    if mix == "busy":
        return moving + clip_jpegs(UPFALL / f"{fall}.mp4", fps, quality)
    still = walk.replace("A06", STILL[index % len(STILL)])  # the middle of the trial: settled
    settled = clip_jpegs(UPFALL / f"{still}.mp4", fps, quality, DAY_STILL_FROM_S + DAY_STILL_S)
    return moving + settled[int(DAY_STILL_FROM_S * fps):]


class LoopingProducer(Producer):
    """The project's producer in live mode, publishing a camera's loop for ever. The loop is
    JPEG-encoded once and its bytes re-sent: a camera costs this machine its XADDs, not a
    video decode and an encode per frame (those run where the cameras are)."""

    def __init__(self, settings, camera, jpegs: list[bytes]) -> None:
        super().__init__(settings, camera)
        self.jpegs = jpegs

    def _publish_all(self, source, max_frames) -> int:
        seq, t0 = self.first_seq, self.clock()
        self.stats["state"] = "running"
        while not self._stop:
            k = seq - self.first_seq
            ts = t0 + k / self.camera.fps
            self._wait_until(ts)
            self._publish(Frame(self.camera.id, seq, ts, WIDTH, HEIGHT, self.jpegs[k % len(self.jpegs)]))
            seq += 1
        return seq


def role_producer(url: str, camera: str, index: int, fps: float, mix: str) -> int:
    settings = load_settings(redis_url=url, mode="live")
    jpegs = camera_jpegs(index, fps, settings.jpeg_quality, mix)
    fall = PAIRS[index % len(PAIRS)][1]
    producer = LoopingProducer(settings, make_camera(id=camera, source=str(UPFALL / f"{fall}.mp4"),
                                                     fps=fps, mode="live"), jpegs)
    signal.signal(signal.SIGTERM, producer.request_stop)
    return producer.run()


def role_bare(providers: str, threads: int, seconds: float, fps: float, spin: bool = False,
              pose_model: str = "movenet") -> int:
    """Print bare onnxruntime frames/s (JSON) on two cameras' frames, decoded from their JPEGs.
    ``spin``: with onnxruntime's spinning intra-op threads (the pose worker turns them off)."""
    from bench_pipeline import bare_pose_fps

    from shared.modelpaths import resolve_pose_model
    from workers.pose.adapters import load_pose_model
    from workers.pose.movenet import MoveNetModel
    from workers.inference.sessions import create_session

    settings = load_settings()
    path = resolve_pose_model(pose_model, settings)
    if spin:
        model = MoveNetModel(create_session(path, providers.split(","), threads, spin=True))
    else:
        model = load_pose_model(pose_model, path, providers=providers.split(","), threads=threads,
                                input_size=settings.pose_input_size)  # ACTIONSTREAM_POSE_INPUT_SIZE
    jpegs = camera_jpegs(0, fps, settings.jpeg_quality) + camera_jpegs(1, fps, settings.jpeg_quality)
    frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs[::2]]
    bare_pose_fps(model, frames[:10])  # warm-up
    cpu0, t0 = time.process_time(), time.perf_counter()
    rate = bare_pose_fps(model, frames, seconds)
    n = rate * (time.perf_counter() - t0)
    print(json.dumps({"fps": rate, "cpu_ms": 1000 * (time.process_time() - cpu0) / n,
                      "provider": model.session.get_providers()[0]}), flush=True)
    return 0


# ---------------------------------------------------------------- processes and measurement

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_env(model: str) -> dict:
    """``movenet`` or ``movenet@160`` (an input size) -> the environment of a process running it."""
    name, _, size = model.partition("@")
    env = dict(os.environ, ACTIONSTREAM_POSE_MODEL=name)
    env.pop("ACTIONSTREAM_POSE_INPUT_SIZE", None)
    return dict(env, ACTIONSTREAM_POSE_INPUT_SIZE=size) if size else env


def _env(url: str, args, model: str = "movenet", gating: bool = False) -> dict:
    env = dict(_model_env(model), ACTIONSTREAM_REDIS_URL=url, ACTIONSTREAM_MODE="live",
               ACTIONSTREAM_MOTION_GATING=str(gating).lower(),
               ACTIONSTREAM_LOG_LEVEL="WARNING", ACTIONSTREAM_THREADS=str(args.threads),
               ACTIONSTREAM_PROVIDERS=json.dumps(args.providers.split(",")),
               ACTIONSTREAM_LEASE_TTL_S="4",  # cameras are taken within a lease period (1 s)
               ACTIONSTREAM_MAX_LAG_S="60")  # past capacity every frame is processed, none skipped
    env.pop("ACTIONSTREAM_METRICS_PORT", None)
    return env


def bare_fps(args, workers: int, model: str = "movenet") -> dict:
    """Summed frames/s of ``workers`` bare processes running at once, CPU ms per frame."""
    cmd = [sys.executable, __file__, "--role", "bare", "--providers", args.providers,
           "--pose-model", model.partition("@")[0],
           "--threads", str(args.threads), "--seconds", str(args.bare_seconds), "--fps", str(args.fps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_model_env(model))
             for _ in range(workers)]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    return {"fps": sum(o["fps"] for o in outs), "cpu_ms": statistics.mean(o["cpu_ms"] for o in outs),
            "provider": outs[0]["provider"]}


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the processes have used."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pids: list[int]) -> float:
    """Resident memory (MiB) of the processes."""
    total = 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    return total


def scrape(urls: list[str]) -> dict:
    """The workers' pose metrics, summed: frames inferred, gated and skipped stale; ages per camera."""
    out = {"inferred": 0.0, "stale": 0.0, "gated": 0.0, "ages": {}}
    for url in urls:
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            m = METRIC.match(line)
            if m and m.group(1) == "actionstream_pose_frames_gated_total":
                out["gated"] += float(m.group(3))
            if not m or 'stage="pose"' not in m.group(2):
                continue
            name, labels, value = m.group(1), m.group(2), float(m.group(3))
            if name == "actionstream_inference_batch_size_sum":
                out["inferred"] += value
            elif name == "actionstream_frames_skipped_total" and 'reason="stale"' in labels:
                out["stale"] += value
            elif name == "actionstream_entry_age_seconds":
                out["ages"][re.search(r'camera="([^"]*)"', labels).group(1)] = value
    return out


def offered(r, cameras: list[str]) -> int:
    """Frames the producers have added to the cameras' streams in all."""
    return sum(int(r.xinfo_stream(keys.frames_stream(c))["entries-added"]) for c in cameras)


def backlog(r, cameras: list[str]) -> int:
    """Frames the pose group has not yet acked, all cameras."""
    return sum(group_lag(r, keys.frames_stream(c), keys.POSE_GROUP) or 0 for c in cameras)


def measure(r, urls: list[str], cameras: list[str], seconds: float, pids: dict) -> dict:
    """One step's figures over ``seconds``; ``pids``: {group: [pid]} whose CPU use is shown."""
    a, added_a, t_a, backlog_a = scrape(urls), offered(r, cameras), time.monotonic(), backlog(r, cameras)
    cpu_a = {g: cpu_s(ps) for g, ps in pids.items()}
    lags = []
    while time.monotonic() - t_a < seconds:
        time.sleep(0.5)
        ages = scrape(urls)["ages"]
        lags.append(max((ages.get(c, 0.0) for c in cameras), default=0.0))
    b, added_b, t_b, backlog_b = scrape(urls), offered(r, cameras), time.monotonic(), backlog(r, cameras)
    dt = t_b - t_a
    cpu = {g: (cpu_s(ps) - cpu_a[g]) / dt for g, ps in pids.items()}
    processed = (b["inferred"] - a["inferred"]) / dt
    return {"offered": (added_b - added_a) / dt, "processed": processed,
            "gated": (b["gated"] - a["gated"]) / dt, "rss_mb": rss_mb(pids["pose"]),
            "stale": (b["stale"] - a["stale"]) / dt, "lag": statistics.median(lags),
            "lag_max": max(lags), "lag_end": statistics.median(lags[-4:]), "growth": backlog_b - backlog_a,
            "cpu": cpu, "pose_cpu_ms": 1000 * cpu["pose"] / max(processed, 1e-9)}


def climb(url: str, args, workers: int, model: str = "movenet", gating: bool = False,
          mix: str = "busy") -> dict:
    """Add cameras until the lag passes the limit: cameras held, frames/s at that step, the
    most frames/s of any step (the saturated throughput: the first step not held, or a held
    one when reading and skipping a stale backlog cost more) and the workers' CPU ms per frame
    there."""
    env, r = _env(url, args, model, gating), connect(url)
    r.flushall()  # our own server: no leases, heartbeats or streams from the last climb
    ports = [_free_port() for _ in range(workers)]
    procs = [subprocess.Popen([sys.executable, "-m", "workers", "pose-worker", "--metrics-port",
                               str(port)], cwd=ROOT, env=env) for port in ports]
    if args.action:
        procs.append(subprocess.Popen([sys.executable, "-m", "workers", "action-worker"],
                                      cwd=ROOT, env=env))
    urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
    cams: list[str] = []
    pids = {"pose": [p.pid for p in procs[:workers]], "producers": [],
            "redis": [int(r.info("server")["process_id"])]}
    res = {"held": 0, "held_fps": 0.0, "saturated": 0.0, "pose_cpu_ms": 0.0, "limit_reached": False,
           "rss_first": 0.0, "rss_held": 0.0, "gated_share": 0.0}
    try:
        _wait_for_workers(r, workers)
        print(f"\n{workers} pose worker(s), {model}, gating {'on' if gating else 'off'}, {mix} cameras:\n"
              f"{'':>20} {'cams':>4} {'offered':>8} {'processed':>9} {'gated/s':>7} {'stale/s':>7} "
              f"{'lag med':>7} {'lag max':>7} {'CPU% pose':>9} {'ms/frame':>8} {'producers':>9} {'redis':>5} "
              f"{'RSS MiB':>7}", flush=True)
        while len(cams) < args.max_cameras:
            cams.append(f"cap-{len(cams):02d}")
            procs.append(subprocess.Popen([sys.executable, __file__, "--role", "producer", "--redis", url,
                                           "--camera", cams[-1], "--index", str(len(cams) - 1),
                                           "--fps", str(args.fps), "--mix", mix], env=env))
            pids["producers"].append(procs[-1].pid)
            time.sleep(args.warmup)
            m = measure(r, urls, cams, args.window, pids)
            grows = m["growth"] > GROWTH_S * args.fps * len(cams)  # falling behind, not yet 1 s late
            ok = max(m["lag"], m["lag_end"]) <= args.lag_limit and not grows
            c = {g: 100 * v for g, v in m["cpu"].items()}
            print(f"{'':>20} {len(cams):4d} {m['offered']:8.1f} {m['processed']:9.1f} {m['gated']:7.1f} "
                  f"{m['stale']:7.1f} {m['lag']:7.2f} {m['lag_max']:7.2f} {c['pose']:9.0f} "
                  f"{m['pose_cpu_ms']:8.1f} {c['producers']:9.0f} {c['redis']:5.0f} {m['rss_mb']:7.0f}  "
                  f"{'held' if ok else 'NOT held'}", flush=True)
            res["rss_first"] = res["rss_first"] or m["rss_mb"]
            if m["processed"] > res["saturated"]:  # the most the workers did in any step
                res.update(saturated=m["processed"], pose_cpu_ms=m["pose_cpu_ms"])
            if not ok:
                res["limit_reached"] = True
                break
            res.update(held=len(cams), held_fps=m["processed"], rss_held=m["rss_mb"],
                       gated_share=m["gated"] / max(m["offered"], 1e-9))
    finally:
        _stop(procs)
    return res


def _wait_for_workers(r, workers: int, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        beats = [json.loads(r.get(k) or "{}") for k in r.scan_iter(match=keys.worker_pattern())]
        if sum(b.get("stage") == keys.POSE_GROUP for b in beats) >= workers:
            return
        time.sleep(0.5)
    raise SystemExit("capacity: the pose workers did not start (see their log above)")


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- main

def parse_configs(text: str) -> list[tuple[str, bool]]:
    """``movenet:off,movenet_int8:on,movenet@160:on`` -> [(model, gating), ...] (``@SIZE``:
    ACTIONSTREAM_POSE_INPUT_SIZE)."""
    out = []
    for item in text.split(","):
        model, _, gating = item.partition(":")
        if gating not in ("", "on", "off"):
            raise SystemExit(f"capacity: --configs item {item!r}: give MODEL[@SIZE]:on or MODEL[@SIZE]:off")
        _, at, size = model.partition("@")
        if at and not size.isdigit():
            raise SystemExit(f"capacity: --configs item {item!r}: SIZE is the input's longer side in pixels")
        out.append((model, gating == "on"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2", help="pose worker counts to climb with, in turn")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--max-cameras", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per worker")
    p.add_argument("--providers", default="CPUExecutionProvider",
                   help="comma list (CUDAExecutionProvider,CPUExecutionProvider on a GPU)")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds after adding a camera")
    p.add_argument("--window", type=float, default=15.0, help="seconds measured per step")
    p.add_argument("--lag-limit", type=float, default=1.0, help="live lag (s) a held step stays within")
    p.add_argument("--bare-seconds", type=float, default=10.0)
    p.add_argument("--action", action="store_true", help="run the action worker too")
    p.add_argument("--mix", default="busy", help="camera loops to climb with, in turn: busy, day")
    p.add_argument("--configs", default="movenet:off",
                   help="MODEL[@INPUT_SIZE]:on|off (motion gating) climbs, in turn")
    p.add_argument("--role", choices=["producer", "bare"], help=argparse.SUPPRESS)
    p.add_argument("--redis", help=argparse.SUPPRESS)
    p.add_argument("--camera", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=8.0, help=argparse.SUPPRESS)
    p.add_argument("--pose-model", default="movenet", help=argparse.SUPPRESS)
    p.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)  # bare: onnxruntime spinning
    args = p.parse_args(argv)
    if args.role == "producer":
        return role_producer(args.redis, args.camera, args.index, args.fps, args.mix)
    if args.role == "bare":
        return role_bare(args.providers, args.threads, args.seconds, args.fps, args.spin, args.pose_model)
    names = {n for pair in PAIRS for n in pair} | {w.replace("A06", a) for w, _ in PAIRS for a in STILL}
    missing = sorted(n for n in names if not (UPFALL / f"{n}.mp4").is_file())
    if missing:
        print(f"capacity: UP-Fall clips absent from {UPFALL} ({', '.join(missing[:3])}...)", file=sys.stderr)
        return 2
    print(f"load average at the start {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    rows = []
    with RedisServer() as server:
        for mix in args.mix.split(","):
            for model, gating in parse_configs(args.configs):
                for workers in (int(w) for w in args.workers.split(",")):
                    rows.append(_climb_between_bares(server.url, args, workers, model, gating, mix))
    _print_table(args, rows)
    return 0


def _climb_between_bares(url: str, args, workers: int, model: str, gating: bool, mix: str) -> dict:
    before = bare_fps(args, workers, model)
    print(f"bare onnxruntime ({model}), {workers} process(es) at once: {before['fps']:.1f} frames/s, "
          f"{before['cpu_ms']:.1f} CPU ms/frame on {before['provider']}", flush=True)
    res = climb(url, args, workers, model, gating, mix)
    after = bare_fps(args, workers, model)
    print(f"bare onnxruntime again: {after['fps']:.1f} frames/s, {after['cpu_ms']:.1f} CPU ms/frame",
          flush=True)
    return dict(res, workers=workers, provider=before["provider"], model=model, gating=gating, mix=mix,
                bare=(before["fps"] + after["fps"]) / 2, bare_cpu_ms=(before["cpu_ms"] + after["cpu_ms"]) / 2)


def _print_table(args, rows: list[dict]) -> None:
    action = ", action worker running" if args.action else ""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end {load} on {os.cpu_count()} cores")
    print(f"\ncapacity: {WIDTH}x{HEIGHT} at {args.fps:g} fps per camera, {args.threads} onnxruntime "
          f"thread(s) per worker, lag limit {args.lag_limit:g} s{action}; bare: mean of before and after")
    print("| cameras | pose model | gating | pose workers | cameras held "
          "| frames/s through the model there | share gated | saturated frames/s | bare onnxruntime frames/s "
          "| ratio | CPU ms/frame: worker / bare | pose RSS MiB: 1 camera / held |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w in rows:
        held = w["held"] if w["limit_reached"] else f"{w['held']} or more (--max-cameras)"
        print(f"| {w['mix']} | {w['model']} | {'on' if w['gating'] else 'off'} | {w['workers']} | {held} "
              f"| {w['held_fps']:.1f} | {w['gated_share']:.0%} | {w['saturated']:.1f} | {w['bare']:.1f} "
              f"| {w['saturated'] / w['bare']:.2f} | {w['pose_cpu_ms']:.1f} / {w['bare_cpu_ms']:.1f} "
              f"| {w['rss_first']:.0f} / {w['rss_held']:.0f} |")
    if not all(w["limit_reached"] for w in rows):
        print("(a climb that reached --max-cameras did not saturate: its ratios are not the ceiling's)")


if __name__ == "__main__":
    sys.exit(main())
