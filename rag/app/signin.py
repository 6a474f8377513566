"""Who is asking, decided on every request: the page's sign-in and the API's keys behind one policy.

Whether anyone must sign in is read from the users file each time (its parse is cached on its stat, so this costs a
``stat``): a server started with no users, on this machine only, is open to the person at it
(:data:`~rag.app.access.LOCAL_USER`) until ``rag user add`` writes the first user, and from that request on the
page asks for a password and the API for a key. A server reachable from other machines never opens without users.
Failed passwords are counted per user name; past :attr:`SignIn.max_failures` within :attr:`SignIn.window_s` that
name cannot sign in until the window has passed, the right password included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from .access import LOCAL_USER, User, UserStore

log = logging.getLogger(__name__)


class SignIn:
    """The sign-in policy of one server process (see the module docstring)."""

    max_failures = 5
    window_s = 15 * 60.0
    max_names = 10_000

    def __init__(self, users: UserStore, *, open_when_empty: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``open_when_empty``: whether, with no users configured, requests act as the local user (only for a
        server bound to a loopback address)."""
        self.users = users
        self.open_when_empty = open_when_empty
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def required(self) -> bool:
        """Whether this request must come from a signed-in user (or carry a key)."""
        return not self.open_when_empty or self.users.exists()

    def user(self, name: str | None) -> User | None:
        """The user a request acts as: the local user while the server is open, else the signed-in ``name``
        (``None``: nobody signed in, or a name since removed)."""
        if not self.required():
            return LOCAL_USER
        return self.users.get(name) if name else None

    def key_user(self, authorization: str | None) -> User | None:
        """The user an ``Authorization: Bearer rag-…`` header names (the local user while the server is open)."""
        if not self.required():
            return LOCAL_USER
        scheme, _, key = (authorization or "").partition(" ")
        return self.users.authenticate_key(key.strip()) if scheme.lower() == "bearer" else None

    def _recent(self, name: str) -> deque[float]:
        failures = self._failures[name]
        while failures and failures[0] <= self._clock() - self.window_s:
            failures.popleft()
        return failures

    def check_password(self, name: str, password: str) -> bool:
        """Whether ``name`` may sign in with ``password`` now (see the module docstring on failed attempts)."""
        with self._lock:
            if len(self._recent(name)) >= self.max_failures:
                log.warning("sign-in as %r refused: %d failed attempts in %.0f minutes", name, self.max_failures,
                            self.window_s / 60)
                return False
        ok = self.users.authenticate(name, password) is not None
        with self._lock:
            if ok:
                self._failures.pop(name, None)
            else:
                self._recent(name).append(self._clock())
                if len(self._failures) > self.max_names:  # names made up by the thousand must not fill memory
                    for other in [n for n in self._failures if not self._recent(n)]:
                        del self._failures[other]
        return ok
