"""One root for the project's exceptions, and the CLI catching its user-error branch by type.

Every exception class defined in ``shared``, ``producer`` and ``workers`` derives from
:class:`shared.errors.ActionstreamError`, found by importing every module (in a subprocess,
so that this test imports nothing heavy into the others' process). Bad input derives from
:class:`shared.errors.UserError`, which ``actionstream`` turns into one line and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared.errors import ActionstreamError, UserError
from tests.conftest import ROOT

ROOT_NAME = f"{ActionstreamError.__module__}.{ActionstreamError.__qualname__}"
USER_NAME = f"{UserError.__module__}.{UserError.__qualname__}"

# every module of the three packages, each exception class it defines -> its MRO's names
SCAN = r'''
import importlib, inspect, json, pkgutil
found, failed = {}, {}
for top in ("shared", "producer", "workers"):
    for info in pkgutil.walk_packages(importlib.import_module(top).__path__, top + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            module = importlib.import_module(info.name)
        except BaseException as exc:
            failed[info.name] = repr(exc)
            continue
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = [
                    f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
print(json.dumps({"found": found, "failed": failed}))
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _scan() -> dict:
    out = subprocess.run([sys.executable, "-c", SCAN], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


FOUND = _scan()
CLASSES = {name: mro for name, mro in FOUND["found"].items() if name not in (ROOT_NAME, USER_NAME)}


def test_every_module_was_imported_and_the_scan_finds_the_classes():
    assert FOUND["failed"] == {}  # a module that cannot be imported would hide its classes
    assert {ROOT_NAME, USER_NAME} <= set(FOUND["found"])
    assert len(CLASSES) >= 40, sorted(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_exception_class_derives_from_the_root(name):
    assert ROOT_NAME in CLASSES[name], f"{name} derives from {CLASSES[name][1:]}, not ActionstreamError"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_root_comes_before_a_builtin_base(name):
    """A class keeps its builtin base (``except ValueError`` still catches it) after the
    project's: ``class SettingsError(UserError, ValueError)``."""
    mro = CLASSES[name]
    first_builtin = next(c for c in mro if c.startswith("builtins."))
    assert mro.index(ROOT_NAME) < mro.index(first_builtin), mro


def _cli(args: list[str], env: dict[str, str] | None = None, code: str | None = None):
    full = {**_env(), **(env or {})}
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "workers", *args]
    return subprocess.run(argv, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_a_setting_that_fails_validation_is_a_user_error(monkeypatch):
    from shared.settings import load_settings

    monkeypatch.setenv("ACTIONSTREAM_STRIDE", "abc")
    with pytest.raises(UserError, match="ACTIONSTREAM_STRIDE"):
        load_settings()


def test_the_cli_prints_a_user_error_of_a_real_command_on_one_line_exit_2():
    proc = _cli(["status"], {"ACTIONSTREAM_STRIDE": "abc"})
    assert proc.returncode == UserError.exit_code == 2, proc.stderr[-3000:]
    [line] = proc.stderr.splitlines()
    assert line.startswith("actionstream status: error: ") and "ACTIONSTREAM_STRIDE" in line, line
    assert "Traceback" not in proc.stderr


# a command whose function raises ERROR (defined here: no table in the CLI names it)
RAISING = '''
import sys
from shared.errors import ActionstreamError, UserError
from workers.console import cli

class NotInAnyTable(%s):
    pass

def _cmd_status(args):
    raise NotInAnyTable("the camera file   says\\n\\n  nothing")

cli._cmd_status = _cmd_status
sys.exit(cli.main(sys.argv[1:]))
'''


def test_the_cli_catches_any_user_error_by_type():
    proc = _cli(["status"], code=RAISING % "UserError")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == ["actionstream status: error: the camera file says",
                                        "    nothing"], proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_cli_shows_other_project_errors_as_bugs():
    """The root alone is not a user error: a traceback, not a message."""
    proc = _cli(["status"], code=RAISING % "ActionstreamError")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" in proc.stderr and "NotInAnyTable: the camera file" in proc.stderr
