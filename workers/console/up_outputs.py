"""What ``actionstream up`` writes: each output checked before anything starts (a path that
cannot be written is bad input, found before the work, not after it), and written at the end
of the run or when the run is stopped (Ctrl-C, SIGTERM): what was produced by then is kept."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Optional

from shared.settings import Camera, Settings, SettingsError
from workers.console.exports import Collector, write_events, write_skeletons

log = logging.getLogger(__name__)


def annotate_paths(out: str | Path, cameras: list[Camera]) -> dict[str, Path]:
    """camera id -> its annotated video (``out``, or ``out`` with the id before the suffix
    when there are several cameras)."""
    out = Path(out)
    if len(cameras) == 1:
        return {cameras[0].id: out}
    return {cam.id: out.with_name(f"{out.stem}.{cam.id}{out.suffix}") for cam in cameras}


def _unwritable(flag: str, path: Path, exc: OSError, what: str) -> SettingsError:
    return SettingsError(f"{flag} {path} cannot be written ({exc.strerror or exc}); give {what}")


def check_file(flag: str, path: Path) -> None:
    """SettingsError unless ``path`` can be written (its folder exists, it is no folder); a
    file made to find out is removed again."""
    if path.is_dir():
        raise SettingsError(f"{flag} {path} is a folder; give a file name")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise _unwritable(flag, path, exc, "a file in a folder that exists and may be written") from None
    if not existed:
        path.unlink(missing_ok=True)


def check_folder(flag: str, path: Path) -> None:
    """SettingsError unless ``path`` is (or can be made) a folder files can be written into;
    it is made now."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise _unwritable(flag, path, exc, "a folder that exists or can be made, and may be written") \
            from None


def check_outputs(args, cameras: list[Camera]) -> None:
    """Every output of the run can be written (before anything starts)."""
    if args.events_out:
        check_file("--events-out", Path(args.events_out))
    if args.skeletons_out:
        check_folder("--skeletons-out", Path(args.skeletons_out))
    if args.annotate_out:
        for path in annotate_paths(args.annotate_out, cameras).values():
            check_file("--annotate-out", path)


def write_outputs(args, cameras: list[Camera], settings: Settings, collector: Collector,
                  stopped: bool = False) -> None:
    """The requested outputs from what the collector holds. ``stopped``: the run was cut
    short; the annotated video then ends at the last frame that went through the pipeline."""
    if args.events_out:
        write_events(collector.events, args.events_out)
        log.info("up: %d events written to %s", len(collector.events), args.events_out)
    if args.skeletons_out:
        paths = write_skeletons(collector, args.skeletons_out)
        log.info("up: skeletons written to %s", ", ".join(map(str, paths)))
    if args.annotate_out:
        from workers.console.annotate import annotate

        for cam_id, out in annotate_paths(args.annotate_out, cameras).items():
            cam = next(c for c in cameras if c.id == cam_id)
            record = collector.cameras[cam_id]
            until: Optional[int] = record.last_seq if stopped else None
            annotate(cam, settings.frame_width, record, [e for e in collector.events if e.camera == cam_id],
                     out, until=until)
            log.info("up: annotated video written to %s", out)


def keep_what_was_made(args, cameras: list[Camera], settings: Settings,
                       collector: Optional[Collector]) -> None:
    """On a stop: read what the stopped stages wrote last and write the outputs from it; an
    output that cannot be written then is logged, not raised (the run is ending anyway)."""
    if collector is None or not (args.events_out or args.skeletons_out or args.annotate_out):
        return
    from shared.redisio import CONNECTION_ERRORS

    try:
        collector.drain()
    except CONNECTION_ERRORS as exc:
        log.warning("up: redis unreachable (%s); writing what was read before", exc)
    try:
        write_outputs(args, cameras, settings, collector, stopped=True)
    except OSError as exc:
        log.error("up: the outputs could not be written: %s", exc)
    log.info("up: stopped; the outputs hold what went through the pipeline until then (%d frames, "
             "%d events)", collector.frames_done(), len(collector.events))
