"""The commands that manage an installation: ``rag user``, ``library``, ``audit`` and ``feedback``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..app.access import ROLES, UserStore
from ..config import Settings
from .common import UsageError, library_of, log, me, open_service, print_json


def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    with open_service(settings) as service:  # its users file: the one the page and the API sign in with
        return _user_command(args, settings, service.users)


def _user_command(args: argparse.Namespace, settings: Settings, users: UserStore) -> int:
    if args.user_command == "list":
        listed = users.list()
        if args.json:
            print_json([{"name": u.name, "role": u.role, "libraries": dict(u.grants)} for u in listed])
        else:
            for user in listed:
                grants = ", ".join(f"{lib}: {role}" for lib, role in user.grants)
                print(f"{user.name}\t{user.role}" + (f"\t({grants})" if grants else ""))
        return 0
    if args.user_command == "remove":
        users.remove(args.name)
        print(f"removed user {args.name} from {settings.users_file}")
        return 0
    if args.user_command == "grant":
        user = users.grant(args.name, args.library_name, None if args.role == "inherit" else args.role)
        grants = dict(user.grants)
        print(f"{user.name}: {grants.get(args.library_name, user.role)} in library {args.library_name} "
              f"(elsewhere {user.role})")
        return 0
    if args.user_command == "key":
        key = users.create_key(args.name, args.label or "")
        print(key if not args.json else json.dumps({"user": args.name, "key": key}))
        log.info("the key is shown this once; only its hash is stored in %s", settings.users_file)
        return 0
    if args.user_command == "revoke-keys":
        print(f"revoked {users.revoke_keys(args.name)} key(s) of {args.name}")
        return 0
    password = _read_password(args.password_stdin)
    if args.user_command == "passwd":
        users.set_password(args.name, password)
        print(f"changed the password of {args.name}")
    else:
        user = users.add(args.name, password, args.role)
        print(f"added user {user.name} ({user.role}) to {settings.users_file}")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pass it on standard input with --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def cmd_library(args: argparse.Namespace, settings: Settings) -> int:
    with open_service(settings) as service:  # no model: the catalogue, the users file and the audit log
        if args.library_command == "list":
            rows = [{"name": name, "path": str(service.libraries.path(name)), **{
                key: getattr(service.stats(me(), name), key) for key in ("documents", "chunks")}}
                for name in service.libraries.names()]
        elif args.library_command == "create":
            service.create_library(me(), args.name)
            message = f"created library {args.name} at {service.libraries.path(args.name)}"
        elif args.library_command == "rename":
            service.rename_library(me(), args.old, args.new)
            message = f"renamed library {args.old} to {args.new}"
        else:
            moved = service.delete_library(me(), args.name)
            message = f"deleted library {args.name}: moved to {moved} (move it back to restore it)"
    if args.library_command == "list":
        if args.json:
            print_json(rows)
        for row in rows if not args.json else []:
            print(f"{row['name']}\t{row['documents']} documents, {row['chunks']} chunks\t{row['path']}")
    else:
        print(json.dumps({"ok": True, "message": message}, ensure_ascii=False) if args.json else message)
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    with open_service(settings) as service:
        events = service.audit_log(me(), args.limit, args.library)
    if args.json:
        print_json([asdict(e) for e in events])
        return 0
    for event in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
        print(f"{when}  {event.user}  {event.action}  {event.library or '-'}  "
              f"{json.dumps(event.detail, ensure_ascii=False)}")
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    library = library_of(args)
    if args.feedback_command == "export":
        with open_service(settings) as service:
            counts = service.export_feedback(me(), Path(args.out), library)
        print(json.dumps(counts, ensure_ascii=False) if args.json else
              f"wrote {counts['written']} questions to {args.out} ({counts['positive']} 👍, {counts['negative']} 👎, "
              f"{counts['needs_review']} to review before `rag eval qa` reads them)")
        return 0
    with open_service(settings) as service:
        records = service.feedback.list(library=library, limit=args.limit)
    if args.json:
        print_json([asdict(r) for r in records])
        return 0
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created or 0))
        print(f"{when}  {'👍' if record.rating > 0 else '👎'}  {record.user}  {record.question} → {record.answer}"
              + (f"  （{record.comment}）" if record.comment else ""))
    return 0


# -- parsers ----------------------------------------------------------------------------------------------------------
def add_user(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("user", help="manage the users of the web page and the API",
                       description="Users of the web page and API, with salted scrypt password hashes, in the users "
                       "file (users_file in the config, default users.json). Roles: viewer (ask, read), editor (also "
                       "ingest and remove), admin (everything).")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    u = user_sub.add_parser("add", parents=[common], help="add a user (asks for the password)",
                            description="Add a user; the password is asked for twice, or read from standard input.")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--role", choices=list(ROLES), default="viewer", help="viewer (default), editor or admin")
    u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    u = user_sub.add_parser("passwd", parents=[common], help="change a user's password",
                            description="Set a new password for an existing user.")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    u = user_sub.add_parser("remove", parents=[common], help="delete a user", description="Delete a user.")
    u.add_argument("name", metavar="NAME")
    user_sub.add_parser("list", parents=[common], help="list users and roles", description="List users and roles.")
    u = user_sub.add_parser("grant", parents=[common], help="give a user another role in one library",
                            description="A user's role in one library, overriding their own role there: none hides "
                            "the library, viewer reads, editor also ingests and removes; inherit drops the override. "
                            "Managing users and libraries stays with the user's own role (admin).")
    u.add_argument("name", metavar="NAME")
    u.add_argument("library_name", metavar="LIBRARY")
    u.add_argument("role", choices=[r for r in ROLES if r != "admin"] + ["inherit"])
    u = user_sub.add_parser("key", parents=[common], help="create an API key for a user (printed once)",
                            description="A new key for the HTTP API (Authorization: Bearer KEY), acting as the user "
                            "with their roles. Only its SHA-256 is stored.")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--label", help="what the key is for (shown in the users file)")
    u = user_sub.add_parser("revoke-keys", parents=[common], help="delete every API key of a user",
                            description="Delete every API key of a user.")
    u.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_user)


def add_library(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("library", help="list, create, rename and delete document libraries",
                       description="Libraries are separate indexes in one installation: default is the index folder "
                       "(index_dir), every other one library_dir/NAME. Deleting moves a library to library_dir/.trash.")
    lib_sub = p.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    lib_sub.add_parser("list", parents=[common], help="every library with its counts", description="List libraries.")
    u = lib_sub.add_parser("create", parents=[common], help="a new, empty library", description="Create a library.")
    u.add_argument("name", metavar="NAME")
    u = lib_sub.add_parser("rename", parents=[common], help="rename a library (users' roles follow)",
                           description="Rename a library; roles granted in it follow it.")
    u.add_argument("old", metavar="OLD")
    u.add_argument("new", metavar="NEW")
    u = lib_sub.add_parser("delete", parents=[common], help="move a library to the trash folder",
                           description="Move a library's folder to library_dir/.trash (restore it by moving it back).")
    u.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_library)


def add_feedback(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("feedback", help="answers users rated on the page or through the API",
                       description="👍/👎 and comments users gave answers (state_dir/feedback.sqlite).")
    fb_sub = p.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    u = fb_sub.add_parser("list", parents=[common], help="the newest rated answers",
                          description="The newest rated answers of a library.")
    u.add_argument("--limit", type=int, default=50, help="entries shown (default 50)")
    u = fb_sub.add_parser("export", parents=[common], help="rated answers as a gold-file draft for rag eval qa",
                          description="👍 answers become gold items, 👍 abstentions unanswerable ones; 👎 answers are "
                          "written with \"needs_review\": true (rag eval skips them until a person fixes and unmarks "
                          "them). One line per question, the newest rating winning.")
    u.add_argument("--out", required=True, metavar="FILE", help="the JSONL draft to write")
    p.set_defaults(func=cmd_feedback)


def add_audit(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", parents=[common], help="who ingested, removed or administered what, and when",
                       description="The newest entries of the audit log (state_dir/audit.jsonl), newest first.")
    p.add_argument("--limit", type=int, default=50, help="entries shown (default 50)")
    p.set_defaults(func=cmd_audit)
