"""Operator commands: follow events, show status, list dead letters."""

from __future__ import annotations

import json
import sys
from typing import Optional, TextIO

from shared import codec, keys, metrics
from shared.codec import DecodeError
from shared.redisio import connect, group_lag, registered_cameras, stream_entries, text
from shared.settings import Settings


def print_events(settings: Settings, follow: bool = False, camera: Optional[str] = None,
                 out: TextIO = sys.stdout, max_events: Optional[int] = None) -> int:
    """Print stored events as JSON lines; with ``follow``, keep printing new ones."""
    r = connect(settings)
    last, shown = "0", 0
    while True:
        resp = r.xread({keys.EVENTS_STREAM: last}, count=500, block=1000 if follow else None)
        entries = stream_entries(resp)
        for _, entry_id, fields in entries:
            last = entry_id
            try:
                event = codec.decode_event(fields.get(b"event", b""))
            except DecodeError as exc:
                print(f"# skipped event {entry_id}: {exc}", file=sys.stderr)
                continue
            if camera is None or event.camera == camera:
                out.write(codec.encode_event(event) + "\n")
                out.flush()
                shown += 1
                if max_events is not None and shown >= max_events:
                    return 0
        if not entries and not follow:
            return 0


def status(r, metrics_urls: tuple[str, ...] | list[str] = ()) -> dict:
    """Workers' heartbeats, per-camera stream lengths and lags, the dead-letter count, and the
    numbers each process serves on /metrics (those whose heartbeat names it, and ``metrics_urls``)."""
    workers = []
    for key in r.scan_iter(match=keys.worker_pattern(), count=200):
        raw = r.get(key)
        if raw:
            workers.append(json.loads(raw))
    cams = {}
    for cam in registered_cameras(r):
        cams[cam] = {
            "frames_len": r.xlen(keys.frames_stream(cam)),
            "pose_lag": group_lag(r, keys.frames_stream(cam), keys.POSE_GROUP),
            "skeletons_len": r.xlen(keys.skeletons_stream(cam)),
            "action_lag": group_lag(r, keys.skeletons_stream(cam), keys.ACTION_GROUP),
            "pose_owner": text(r.get(keys.lease_key(keys.POSE_GROUP, cam)) or b""),
            "action_owner": text(r.get(keys.lease_key(keys.ACTION_GROUP, cam)) or b""),
        }
    return {"workers": sorted(workers, key=lambda w: w.get("worker", "")), "cameras": cams,
            "events": r.xlen(keys.EVENTS_STREAM), "dead_letters": r.xlen(keys.DEADLETTER_STREAM),
            "metrics": process_metrics(workers, metrics_urls)}


def process_metrics(workers: list[dict], urls=()) -> dict:
    """Process name -> its /metrics read over HTTP (``samples``), or the ``error`` reading it."""
    targets = {w.get("worker") or f"{w.get('stage')}-{w.get('camera')}": w["metrics_url"]
               for w in workers if w.get("metrics_url")}
    targets.update({url: url for url in urls})
    out = {}
    for name, url in sorted(targets.items()):
        try:
            out[name] = {"url": url, "samples": metrics.scrape(url)}
        except (OSError, ValueError) as exc:
            out[name] = {"url": url, "error": str(exc)}
    return out


def print_status(settings: Settings, out: TextIO = sys.stdout, metrics_urls=()) -> int:
    r = connect(settings)
    out.write(json.dumps(status(r, metrics_urls), indent=2) + "\n")
    return 0


def print_dead_letters(settings: Settings, count: int = 100, out: TextIO = sys.stdout) -> int:
    r = connect(settings)
    for entry_id, fields in r.xrevrange(keys.DEADLETTER_STREAM, count=count):
        try:
            dl = codec.decode_dead_letter(fields)
        except DecodeError as exc:
            print(f"# unreadable dead letter {text(entry_id)}: {exc}", file=sys.stderr)
            continue
        out.write(json.dumps({"at": text(entry_id), "stage": dl.stage, "stream": dl.stream,
                              "id": dl.message_id, "reason": dl.reason, "fields": dl.fields}) + "\n")
    return 0
