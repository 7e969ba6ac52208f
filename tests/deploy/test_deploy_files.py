"""deploy/compose.yaml, deploy/prometheus.yml and deploy/systemd as they are: each actionstream
service or unit runs a command the CLI takes, Prometheus scrapes each service, and the archiver
and the jobs worker share one archive (the archiver writing, the jobs worker reading)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import yaml

from tests.conftest import ROOT
from workers.console.cli import build_parser

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
VENV_BIN = "/opt/actionstream/venv/bin/actionstream"


def parses(argv: list[str]) -> bool:
    """Whether `actionstream ARGV` parses (argparse exits on what it refuses)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            return False
    return True


def actionstream_services() -> dict[str, dict]:
    return {name: s for name, s in COMPOSE["services"].items()
            if "build" in s and "entrypoint" not in s}  # flower: its own entrypoint (test_flower.py)


def unit(path) -> dict[str, list[str]]:
    """``key -> values`` of a unit file (comments and sections left out)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def exec_argv(path) -> list[str]:
    """The unit's ExecStart after the actionstream binary, with %i, %H and ${VAR} filled in."""
    (line,) = unit(path)["ExecStart"]
    line = re.sub(r"\$\{(\w+)\}", "x", line.replace("%i", "cam-1").replace("%H", "host"))
    binary, *argv = line.split()
    assert binary == VENV_BIN, path.name
    return argv


def test_the_argv_check_refuses_what_the_cli_refuses():
    assert parses(["archive", "--dir", "/a"]) and parses(["jobs-worker", "--concurrency", "4"])
    assert not parses(["archive", "--bogus"]) and not parses(["archiver"])


@pytest.mark.parametrize("name", sorted(actionstream_services()))
def test_each_compose_service_runs_a_command_the_cli_takes(name):
    assert parses(actionstream_services()[name]["command"]), actionstream_services()[name]["command"]


def test_prometheus_scrapes_each_compose_service():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    scraped = {n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
               for n in sd["names"]}
    assert set(actionstream_services()) <= scraped


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_runs_a_command_the_cli_takes(path):
    assert parses(exec_argv(path)), path.name


def _archive_volume(service: dict) -> tuple[str, bool]:
    """(named volume, read-only) mounted at the service's ACTIONSTREAM_ARCHIVE_DIR."""
    where = service["environment"]["ACTIONSTREAM_ARCHIVE_DIR"]
    (spec,) = [v for v in service.get("volumes", []) if v.split(":")[1] == where]
    volume, _, mode = f"{spec}:".split(":")[:3]
    return volume, mode == "ro"


def test_compose_runs_one_archiver_writing_the_volume_the_jobs_worker_reads():
    services = actionstream_services()
    (archiver,) = [s for s in services.values() if s["command"][0] == "archive"]
    (jobs,) = [s for s in services.values() if s["command"][0] == "jobs-worker"]
    assert _archive_volume(archiver) == (_archive_volume(jobs)[0], False)
    assert _archive_volume(jobs)[1], "the jobs worker only reads the archive"
    assert _archive_volume(archiver)[0] in COMPOSE["volumes"]  # a named volume: it outlives the container
    assert "deploy" not in archiver or archiver["deploy"].get("replicas", 1) == 1


def test_the_archive_units_share_one_directory_and_the_archiver_is_no_template():
    by_command = {exec_argv(p)[0]: p for p in UNITS}
    archiver, jobs = by_command["archive"], by_command["jobs-worker"]
    assert "@" not in archiver.name  # one archiver per directory: no instances
    dirs = [[v for v in unit(p).get("Environment", []) if v.startswith("ACTIONSTREAM_ARCHIVE_DIR=")]
            for p in (archiver, jobs)]
    assert dirs[0] == dirs[1] and len(dirs[0]) == 1
