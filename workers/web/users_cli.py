"""``actionstream users add|passwd|del|list|role|token|rotate-key``: the web page's users, in
the event history's database (the settings' ``history_url``, else SQLite in ``data_dir``).

A password comes from ``--password-file`` (a secret file), ``--password-stdin``, a prompt
(asked twice) on a terminal, else it is made at random and printed once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

COMMANDS = ("add", "passwd", "del", "list", "role", "token", "rotate-key")


def add_users_command(sub, common) -> None:
    p = sub.add_parser("users", help="the web page's users: add, passwd, del, list, role, token, rotate-key",
                       description="The web page's users (stored in the event history's database).")
    common(p)
    sub2 = p.add_subparsers(dest="users_command", required=True)
    a = sub2.add_parser("add", help="add a user")
    a.add_argument("name")
    a.add_argument("--role", choices=["viewer", "admin"], default="viewer",
                   help="viewer: the page, events, snapshots; admin: everything (default viewer)")
    _password_args(a)
    w = sub2.add_parser("passwd", help="set a user's password (its open sessions end)")
    w.add_argument("name")
    _password_args(w)
    d = sub2.add_parser("del", help="delete a user, its sessions and tokens")
    d.add_argument("name")
    ls = sub2.add_parser("list", help="list the users")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    r = sub2.add_parser("role", help="change a user's role")
    r.add_argument("name")
    r.add_argument("role", choices=["viewer", "admin"])
    t = sub2.add_parser("token", help="a new bearer token for scripts (printed once), or --revoke all of "
                        "the user's tokens")
    t.add_argument("name")
    t.add_argument("--label", help="what the token is for")
    t.add_argument("--revoke", action="store_true", help="revoke every token of the user instead")
    sub2.add_parser("rotate-key", help="a new key for the session cookies: everyone logs in again")
    p.set_defaults(func=cmd_users)


def _password_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-file", metavar="FILE", help="read the password from FILE (a secret)")
    g.add_argument("--password-stdin", action="store_true", help="read the password from stdin")


def _password(args) -> tuple[str, bool]:
    """(the password, whether it was made here and must be shown)."""
    from shared.settings import read_secret
    from workers.history.users import UserError, new_password

    if args.password_file:
        try:
            return read_secret(Path(args.password_file), "--password-file"), False
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {args.name}: ")
        if first != getpass.getpass("again: "):
            raise UserError("the two passwords differ; nothing changed")
        return first, False
    return new_password(), True


def cmd_users(args) -> int:
    from shared.settings import load_settings
    from workers.history.users import UserStore

    store = UserStore.from_settings(load_settings(redis_url=getattr(args, "redis", None)))
    try:
        return _run(store, args)
    finally:
        store.close()


def _run(store, args) -> int:
    command = args.users_command
    if command in ("add", "passwd"):
        password, made = _password(args)
        if command == "add":
            store.add(args.name, args.role, password)
        else:
            store.set_password(args.name, password)
        print(f"user {args.name}: " + (f"password {password} (shown once)" if made else "password set"))
    elif command == "del":
        store.delete(args.name)
        print(f"user {args.name} deleted")
    elif command == "role":
        store.set_role(args.name, args.role)
        print(f"user {args.name} is now {args.role}")
    elif command == "token":
        if args.revoke:
            print(f"user {args.name}: {store.revoke_tokens(args.name)} token(s) revoked")
        else:
            print(store.new_token(args.name, args.label))
    elif command == "rotate-key":
        store.rotate_signing_key()
        print("session key rotated: every session ended (restart the web processes to sign with the new key)")
    else:
        _list(store.list(), args.json)
    return 0


def _list(users: list[dict], as_json: bool) -> None:
    if as_json:
        for user in users:
            print(json.dumps(user))
        return
    if not users:
        print("no user yet (the web page makes an admin on its first start; actionstream users add NAME)")
        return
    print(f"{'user':<24} {'role':<7} {'tokens':>6} {'sessions':>8}")
    for u in users:
        print(f"{u['name']:<24} {u['role']:<7} {u['tokens']:>6} {u['sessions']:>8}")
