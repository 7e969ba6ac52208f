"""The Redis ACL of a deployment: ``deploy/redis/users.acl`` names one user per role, each
limited to the commands and keys its process uses, and every user ``off`` without a password.
:func:`render` turns on each user whose password is given (stored as its SHA-256, so the
rendered file holds no password); a user without one stays off. The passwords come from
secret files (``redis-<user>`` in a folder: Docker or Kubernetes secrets), never the repo.

``python -m shared.redis_acl --secrets DIR [--acl FILE] --out FILE`` renders it (compose's
``redis-acl`` service does, before Redis starts).
"""

from __future__ import annotations

import argparse
import os
import hashlib
import logging
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

ROLES = ("producer", "pose", "action", "alerts", "history", "web", "archive", "jobs")
# the users of no actionstream process: operators (admin), and KEDA's Redis Streams scaler on
# Kubernetes (keda: reads the consumer groups' lag, nothing else)
OTHER_USERS = ("admin", "keda")
DEFAULT_ACL = Path(__file__).resolve().parent.parent / "deploy" / "redis" / "users.acl"


def render(template: str, passwords: dict[str, str]) -> str:
    """``template`` (ACL file lines ``user NAME off RULES...``) with each user of
    ``passwords`` turned on with its password's hash; ValueError for a password of no user."""
    out, named = [], set()
    for line in template.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "user" and words[1] in passwords:
            name = words[1]
            digest = hashlib.sha256(passwords[name].encode()).hexdigest()
            rest = [w for w in words[2:] if w not in ("on", "off", "nopass") and not w.startswith((">", "#"))]
            line = " ".join(["user", name, "on", "resetpass", f"#{digest}", *rest])
            named.add(name)
        out.append(line)
    unknown = sorted(set(passwords) - named)
    if unknown:
        raise ValueError(f"no user {', '.join(unknown)} in the ACL file")
    return "\n".join(out) + "\n"


def secrets_in(folder: Path, users: Optional[list[str]] = None) -> dict[str, str]:
    """The password of each user with a file ``redis-<user>`` in ``folder``."""
    found = {}
    for name in users or [*ROLES, *OTHER_USERS]:
        path = folder / f"redis-{name}"
        if path.is_file():
            found[name] = path.read_text().strip()
    return found


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.redis_acl", description=__doc__.split("\n\n")[0])
    p.add_argument("--secrets", required=True, type=Path, help="folder of redis-<user> password files")
    p.add_argument("--acl", type=Path, default=DEFAULT_ACL, help="the ACL template (deploy/redis/users.acl)")
    p.add_argument("--out", required=True, type=Path, help="the ACL file Redis loads (--aclfile)")
    p.add_argument("--owner", type=int, help="the uid (and gid) Redis runs as, who must read the file "
                   "(the valkey image drops to 999); default: the writer's")
    args = p.parse_args(argv)
    passwords = secrets_in(args.secrets)
    args.out.write_text(render(args.acl.read_text(), passwords))
    args.out.chmod(0o600)
    if args.owner is not None:
        os.chown(args.out, args.owner, args.owner)
    print(f"{args.out}: users on: {', '.join(sorted(passwords)) or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
