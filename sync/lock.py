"""The run lock: never two runs on the same store at once, in one process or across processes.

A lock is a file next to the store, locked with ``fcntl.flock``. The kernel releases a flock when
its holder exits, however it exits (``kill -9`` included), so a lock can never outlive its process:
a file left behind by a dead process is simply not locked, and the next run takes it over. The file
records who holds it (pid, host, job, since) for the messages other runs print, and is emptied on a
clean release, so a non-empty file found by a new holder tells that the previous one died while
holding it.

The lock is re-entrant within a thread (``sync`` takes it, then ``pull`` inside it takes it again)
and exclusive between threads and processes. ``flock`` locks local files; keep the store on a local
disk, not on NFS.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from connector.errors import Busy, ConfigError, Interrupted

log = logging.getLogger("leadscore.lock")

LOCK_SUFFIX = ".lock"


def lock_path(store_path: Path, name: str = "") -> Path:
    """The lock file of a store (``leadscore.duckdb.lock``, ``leadscore.duckdb.serve.lock``).

    Args:
        store_path: the DuckDB file.
        name: a lock's name beside the store's run lock (``serve``), or empty for the run lock.

    Returns:
        The path of the lock file, in the store's directory.
    """
    suffix = f".{name}{LOCK_SUFFIX}" if name else LOCK_SUFFIX
    return store_path.with_name(store_path.name + suffix)


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock, as recorded in the lock file.

    Attributes:
        pid: process id.
        host: host name.
        job: the job that took the lock.
        since: when it was taken (ISO 8601, UTC).
    """

    pid: int
    host: str
    job: str
    since: str

    def describe(self) -> str:
        """One phrase for messages: ``push (pid 4242 on host-a since 2025-06-01 12:00:05 UTC)``."""
        when = self.since.replace("T", " ")[:19]
        return f"{self.job} (pid {self.pid} on {self.host} since {when} UTC)"

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """Read a lock file's content.

        Args:
            text: the file's content.

        Returns:
            The holder, or None when the file is empty or not ours.
        """
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["job"]), str(data["since"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class _Held:
    thread: int
    count: int
    fd: int
    # Lending (the fresh job): a borrower thread of the same process waits for the holder's next
    # checkpoint, uses the store while the holder is parked there, and gives it back.
    borrowers_waiting: int = 0
    lendable: bool = False
    lent_to: int | None = None
    lent_count: int = 0


_registry_lock = threading.Lock()
# Signalled whenever a lock is lent, given back, released or opened for lending.
_changed = threading.Condition(_registry_lock)
_held: dict[str, _Held] = {}


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", errors="replace")


class RunLock:
    """An exclusive, cross-process lock on a file; re-entrant within a thread.

    Usage::

        with RunLock(lock_path(store), "push", wait_seconds=60):
            ...
    """

    def __init__(
        self,
        path: Path,
        job: str,
        *,
        wait_seconds: float = 0.0,
        poll_seconds: float = 0.1,
        should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[LockHolder | None], None] | None = None,
        busy_message: str | None = None,
        borrow: bool = False,
    ) -> None:
        """Describe a lock; :meth:`acquire` (or ``with``) takes it.

        Args:
            path: the lock file (created when missing).
            job: what takes it (recorded in the file, shown to whoever waits).
            wait_seconds: how long to wait for the current holder; 0 gives up at once.
            poll_seconds: how often to try again while waiting.
            should_stop: checked while waiting; a stop request ends the wait.
            on_wait: called once when the lock is busy and the wait begins.
            busy_message: replaces the start of the message when the lock stays busy.
            borrow: when another thread of this process holds the lock, borrow it at that
                thread's next checkpoint rather than wait for its release (the fresh job).
        """
        self.path = Path(path)
        self.job = job
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.should_stop = should_stop
        self.on_wait = on_wait
        self.busy_message = busy_message
        self.borrow = borrow
        self.took_over: LockHolder | None = None
        # True when the last acquire took the lock (not a re-entrant hold inside a run)
        self.outermost = False
        self._key = str(self.path.resolve())
        self._borrowed = False

    def _borrow(self, me: int) -> bool:
        """Borrow the lock from another thread of this process at its next checkpoint.

        Returns:
            True when borrowed; False when no thread of this process holds it (take it normally).

        Raises:
            Busy: the holder reached no checkpoint within ``wait_seconds``.
        """
        deadline = time.monotonic() + self.wait_seconds
        with _changed:
            held = _held.get(self._key)
            if held is None:
                return False
            held.borrowers_waiting += 1
            _changed.notify_all()
            try:
                while True:
                    current = _held.get(self._key)
                    if current is not held:
                        return False  # released meanwhile: take it the normal way
                    if held.lendable and held.lent_to is None:
                        held.lent_to, held.lent_count = me, 1
                        self._borrowed = True
                        return True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Busy(
                            f"{self.job}: the store is busy: {held_description(self.path)} did "
                            f"not reach a checkpoint within {self.wait_seconds:g} s",
                            hint="the next cycle tries again",
                        )
                    _changed.wait(left)
            finally:
                held.borrowers_waiting -= 1
                _changed.notify_all()

    def holder(self) -> LockHolder | None:
        """Who holds the lock now, as recorded in its file (None when free or unreadable).

        Returns:
            The recorded holder when the lock is taken.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return LockHolder.parse(_read(fd))
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            blocking = next((p for p in self.path.parents if p.exists()), None)
            if blocking is not None and not blocking.is_dir():
                reason = f"{blocking} is a file, not a directory"
            raise ConfigError(
                f"cannot create the lock file {self.path} ({reason})",
                hint="the store's directory (store.path) must be writable by the user running "
                "leadscore",
            ) from None

    def acquire(self) -> RunLock:
        """Take the lock, waiting up to ``wait_seconds`` for the current holder.

        A borrowing lock (``borrow=True``) whose holder is another thread of this process waits
        for that holder's next checkpoint (:func:`checkpoint`, :func:`lendable`) and uses the
        store while the holder is parked there, instead of waiting for the holder to finish.

        Returns:
            The lock.

        Raises:
            Busy: another run still held it when the wait ended.
            Interrupted: a stop was requested while waiting.
            ConfigError: the lock file cannot be created (unwritable directory).
        """
        me = threading.get_ident()
        with _registry_lock:
            held = _held.get(self._key)
            if held is not None and held.thread == me:
                held.count += 1
                self.outermost = False
                return self
            if held is not None and held.lent_to == me:
                held.lent_count += 1
                self._borrowed = True
                return self
        if self.borrow and self._borrow(me):
            return self
        fd = self._open()
        deadline = time.monotonic() + self.wait_seconds
        waiting = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                holder = LockHolder.parse(_read(fd))
                if time.monotonic() >= deadline:
                    who = holder.describe() if holder else "another leadscore process"
                    raise Busy(
                        f"{self.busy_message or f'{self.job}: the store is busy'}: "
                        f"{who} holds {self.path}",
                        hint=(
                            f"waited {self.wait_seconds:g} s; "
                            if self.wait_seconds
                            else "no wait configured; "
                        )
                        + "let it finish, or raise schedule.lock_wait_seconds",
                    )
                if not waiting:
                    waiting = True
                    if self.on_wait is not None:
                        self.on_wait(holder)
                if self.should_stop is not None and self.should_stop():
                    raise Interrupted(f"{self.job}: stopped while waiting for the store lock")
                time.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))
        except BaseException:
            os.close(fd)
            raise
        previous = LockHolder.parse(_read(fd))
        if previous is not None:
            # A clean release empties the file: this holder died while holding the lock.
            self.took_over = previous
            log.warning(
                "took over the lock %s left by %s, which is no longer running",
                self.path,
                previous.describe(),
            )
        me_as_holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": self.job,
            "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me_as_holder).encode())
        with _registry_lock:
            _held[self._key] = _Held(me, 1, fd)
        self.outermost = True
        return self

    def release(self) -> None:
        """Release the lock (the outermost release of a re-entrant hold empties and unlocks)."""
        with _changed:
            held = _held.get(self._key)
            if held is not None and held.lent_to == threading.get_ident():
                held.lent_count -= 1
                if held.lent_count == 0:
                    held.lent_to = None  # given back: the holder goes on
                    _changed.notify_all()
                return
            if held is None or held.thread != threading.get_ident():
                return
            held.count -= 1
            if held.count > 0:
                return
            del _held[self._key]
            _changed.notify_all()
        try:
            os.ftruncate(held.fd, 0)
        finally:
            fcntl.flock(held.fd, fcntl.LOCK_UN)
            os.close(held.fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def held_description(path: Path) -> str:
    """Who holds a lock, for messages."""
    holder = RunLock(path, "").holder()
    return holder.describe() if holder else "another leadscore run"


@contextmanager
def lendable(path: Path) -> Iterator[None]:
    """Mark a stretch of work that does not touch the store: a borrower may use it meanwhile.

    Called by the lock's holder (``train`` around its model fits); a no-op for a thread that
    does not hold the lock. On leaving, the holder waits for a borrower to give the lock back.

    Args:
        path: the lock file (``lock_path(store)``).
    """
    key = str(Path(path).resolve())
    me = threading.get_ident()
    with _changed:
        held = _held.get(key)
        if held is None or held.thread != me:
            held = None
        else:
            held.lendable = True
            _changed.notify_all()
    try:
        yield
    finally:
        if held is not None:
            with _changed:
                held.lendable = False
                while held.lent_to is not None:
                    _changed.wait()


def checkpoint(path: Path, wait_seconds: float = 60.0) -> bool:
    """Between two units of store work: lend the lock to a waiting borrower, and wait for it back.

    Long jobs call this where they hold no transaction open (between pages, batches, steps); it
    costs nothing when nobody waits.

    Args:
        path: the lock file.
        wait_seconds: how long a waiting borrower has to take the lock before the holder goes on.

    Returns:
        True when the lock was lent (and given back).
    """
    key = str(Path(path).resolve())
    me = threading.get_ident()
    with _changed:
        held = _held.get(key)
        if held is None or held.thread != me or held.borrowers_waiting == 0:
            return False
        held.lendable = True
        _changed.notify_all()
        deadline = time.monotonic() + wait_seconds
        try:
            # until a borrower took it and gave it back (or no borrower came after all)
            while held.lent_to is not None or (
                held.borrowers_waiting > 0 and time.monotonic() < deadline
            ):
                _changed.wait(max(0.01, deadline - time.monotonic()))
        finally:
            held.lendable = False
    return True
