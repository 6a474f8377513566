"""Who may do what: users with salted password hashes, roles, and the one place rights are checked.

Users live in a JSON file (``Settings.users_file``, ``rag user add NAME``). Each has a role; a role is a set of
permissions (:data:`ROLES`), and every front end asks :func:`require` before it changes anything, so the page, the
API and the command line cannot disagree about who may ingest or remove. When the page is reachable only from the
machine it runs on and no users are configured, the person at that machine is :data:`LOCAL_USER`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import enum
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class Permission(enum.Enum):
    """Something a user may be allowed to do."""

    READ = "read"  # ask, search, summarise, read documents
    EDIT = "edit"  # ingest and remove documents, exclude chunks
    ADMIN = "admin"  # manage users and libraries


ROLES: dict[str, frozenset[Permission]] = {
    "none": frozenset(),  # for a library a user must not see (or, as a user's role, every library not granted)
    "viewer": frozenset({Permission.READ}),
    "editor": frozenset({Permission.READ, Permission.EDIT}),
    "admin": frozenset(Permission),
}

# What each permission is called in an error message (the page is Chinese).
_ACTION = {Permission.READ: "查阅资料", Permission.EDIT: "修改文档库", Permission.ADMIN: "管理用户和文档库"}
_ACTION_IN = {Permission.READ: "查阅文档库 {}", Permission.EDIT: "修改文档库 {}", Permission.ADMIN: "管理用户和文档库"}

_NAME = re.compile(r"[\w.@-]{1,64}")
MIN_PASSWORD = 8
# scrypt at n=2**14, r=8: ~16 MB and ~50 ms per check, the parameters OWASP lists for interactive logins.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AccessError(ValueError):
    """A user, password or users file that cannot be used; the message is meant for users."""


class AccessDenied(PermissionError):
    """The user lacks the permission an action needs; the message is meant for users."""


@dataclass(frozen=True)
class User:
    """Someone signed in (or the local user): a role for every library, and other roles for some libraries."""

    name: str
    role: str
    grants: tuple[tuple[str, str], ...] = ()  # (library, role) pairs that override ``role`` in that library

    def role_in(self, library: str | None) -> str:
        """The role that decides this user's rights in ``library`` (``None``: the role itself)."""
        return dict(self.grants).get(library, self.role) if library is not None else self.role

    def can(self, permission: Permission, library: str | None = None) -> bool:
        """Whether this user may do ``permission`` in ``library``; managing users and libraries is never a
        library's to grant, only the user's own role."""
        role = self.role if permission is Permission.ADMIN else self.role_in(library)
        return permission in ROLES.get(role, frozenset())


LOCAL_USER = User("本机用户", "admin")


def require(user: User | None, permission: Permission, library: str | None = None) -> User:
    """``user`` when it may do ``permission`` (in ``library``); raises :class:`AccessDenied` otherwise (``None`` =
    not signed in). Every front end's rights are checked here and nowhere else."""
    if user is None:
        raise AccessDenied(f"请先登录后再{_ACTION[permission]}")
    if not user.can(permission, library):
        action = _ACTION_IN[permission].format(library) if library is not None else _ACTION[permission]
        role = user.role if permission is Permission.ADMIN else user.role_in(library)
        raise AccessDenied(f"用户 {user.name}（{role}）无权{action}")
    return user


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) for ``password`` with a fresh random salt."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant time; ``False`` for a bad record)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), dklen=len(expected),
                             n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Checked against when a name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


class UserStore:
    """The users file: ``{"users": {name: {"password": hash, "role": role, "created": time}}}``, mode 600.

    Every change rewrites the file atomically under a lock, and every read reads it again, so ``rag user add``
    takes effect in a running server at its next login.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # The file as last parsed, with the stat it had: every request asks who may do what, so the file is parsed
        # again only when it changed (rag user add in another process changes its inode, mtime or size).
        self._parsed: tuple[tuple[int, int, int], dict[str, dict]] | None = None

    def _read(self) -> dict[str, dict]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise AccessError(f"users file {self.path} cannot be read ({exc})") from None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        parsed = self._parsed
        if parsed is not None and parsed[0] == signature:
            return copy.deepcopy(parsed[1])
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise AccessError(f"users file {self.path} cannot be read ({exc})") from None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise AccessError(f"users file {self.path} has no \"users\" table")
        # The built-in local user is nobody's account: a record under its name (written by hand) is ignored, so it
        # can never sign in and see what the open page stored.
        if users.pop(LOCAL_USER.name, None) is not None:
            log.warning("users file %s: the record named %r is ignored (that name is reserved)", self.path,
                        LOCAL_USER.name)
        self._parsed = (signature, users)
        return copy.deepcopy(users)

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, dict]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self._read()
            yield users
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"users": users}, fh, ensure_ascii=False, indent=2)
            os.replace(tmp, self.path)

    def exists(self) -> bool:
        """Whether at least one user is configured."""
        return bool(self._read())

    def list(self) -> list[User]:
        """Every user, by name."""
        return [_user(name, record) for name, record in sorted(self._read().items())]

    def get(self, name: str | None) -> User | None:
        """The user called ``name``, or ``None``."""
        record = self._read().get(name or "")
        return _user(name, record) if record and name else None

    def add(self, name: str, password: str, role: str = "viewer", *, replace: bool = False) -> User:
        """Create a user (or, with ``replace``, set an existing one's password and role)."""
        if not _NAME.fullmatch(name):
            raise AccessError(f"user name {name!r}: use 1–64 letters, digits, '.', '@', '-' or '_'")
        if name == LOCAL_USER.name:
            raise AccessError(f"user name {name!r} is reserved for the person at the server's own machine")
        _check_role(role)
        if len(password) < MIN_PASSWORD:
            raise AccessError(f"the password needs at least {MIN_PASSWORD} characters")
        with self._editing() as users:
            if name in users and not replace:
                raise AccessError(f"user {name!r} already exists (use `rag user passwd` to change the password)")
            kept = {k: v for k, v in users.get(name, {}).items() if k in ("libraries", "keys")}
            users[name] = {**kept, "password": hash_password(password), "role": role, "created": time.time()}
        return self.get(name) or User(name, role)

    def grant(self, name: str, library: str, role: str | None) -> User:
        """Give ``name`` the role ``role`` in ``library`` (``None``: their own role again)."""
        if role is not None:
            _check_role(role)
        with self._editing() as users:
            record = _record(users, name)
            grants = record.setdefault("libraries", {})
            if role is None:
                grants.pop(library, None)
            else:
                grants[library] = role
        return self.get(name) or User(name, "viewer")

    def copy_grants(self, old: str, new: str) -> None:
        """Give every user the role in library ``new`` they have in library ``old`` (a rename's first step: the
        library never goes by a name that lacks its grants, see :meth:`rag.app.service.RagService.rename_library`)."""
        with self._editing() as users:
            for record in users.values():
                grants = record.get("libraries") or {}
                if old in grants:
                    grants[new] = grants[old]

    def drop_grants(self, library: str) -> None:
        """Forget every user's role in ``library`` (a rename's last step)."""
        with self._editing() as users:
            for record in users.values():
                (record.get("libraries") or {}).pop(library, None)

    def create_key(self, name: str, label: str = "") -> str:
        """A new API key for ``name``, shown this once: only its SHA-256 is stored (keys are random, 256 bits)."""
        secret = "rag-" + secrets.token_urlsafe(32)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        with self._editing() as users:
            record = _record(users, name)
            record.setdefault("keys", []).append({"sha256": digest, "label": label[:64], "created": time.time()})
        return secret

    def revoke_keys(self, name: str) -> int:
        """Delete every API key of ``name``; how many there were."""
        with self._editing() as users:
            return len(_record(users, name).pop("keys", None) or [])

    def authenticate_key(self, key: str) -> User | None:
        """The user an API key belongs to, or ``None``."""
        if not key.startswith("rag-"):
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        try:
            users = self._read()
        except AccessError:
            return None
        for name, record in users.items():
            for stored in record.get("keys", []) if isinstance(record, dict) else []:
                if hmac.compare_digest(str(stored.get("sha256", "")), digest):
                    return _user(name, record)
        return None

    def set_password(self, name: str, password: str) -> None:
        """Change an existing user's password."""
        user = self.get(name)
        if user is None:
            raise AccessError(f"no user {name!r}")
        self.add(name, password, user.role, replace=True)

    def remove(self, name: str) -> None:
        """Delete a user."""
        with self._editing() as users:
            if users.pop(name, None) is None:
                raise AccessError(f"no user {name!r}")

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else ``None`` (the same work either way)."""
        try:
            record = self._read().get(name)
        except AccessError:
            return None
        stored = record.get("password", "") if isinstance(record, dict) else ""
        ok = verify_password(password, stored or _DUMMY_HASH)
        return _user(name, record) if ok and stored and isinstance(record, dict) else None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccessError(f"unknown role {role!r} (use {', '.join(ROLES)})")


def _record(users: dict[str, dict], name: str) -> dict:
    record = users.get(name)
    if not isinstance(record, dict):
        raise AccessError(f"no user {name!r}")
    return record


def _user(name: str, record: dict) -> User:
    grants = record.get("libraries") or {}
    pairs = tuple(sorted((str(k), str(v)) for k, v in grants.items())) if isinstance(grants, dict) else ()
    return User(name, str(record.get("role", "viewer")), pairs)
