"""One tuner per server at a time: a lock held for the length of a trial.

Two tuners on one server unload each other's model and read each other's memory, so a study takes the
server's lock before it starts a trial and gives it back when the trial is stored. A second worker (on the
same study or another) waits, saying for whom, and then plans its trial from everything the first stored.

    FileLock    an flock(2) on <cache>/locks/<server>.lock: every tuner on this machine, whatever its storage.
                The kernel drops it when the process dies, so a killed tuner never blocks the next one.
    RowLock     a row keyed by the server in the study storage (table autotune_server_locks), held on a lease
                that a thread renews: tuners on other machines sharing a PostgreSQL/MySQL storage. A killed
                holder's row expires after the lease (3 heartbeats).

server_lock() takes the file lock always, and the row lock too when the server is not on loopback and the
storage is a shared database (not SQLite): then other machines can reach both. Loopback addresses are one
key (127.0.0.1, localhost, 0.0.0.0 and ::1 dial the same server).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from tuner.errors import StorageError
from tuner.installs import cache_root

Notify = Callable[[str], None]


class ServerLock(Protocol):
    key: str

    def acquire(self, notify: Notify) -> None:
        """Block until the lock is ours; say once, through `notify`, whom we wait for."""
        ...

    def release(self) -> None: ...


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_key(url: str) -> str:
    """The server's identity: its URL without credentials, loopback addresses as one."""
    split = urllib.parse.urlsplit(url)
    host = "loopback" if is_loopback(url) else (split.hostname or "")
    port = split.port or (443 if split.scheme == "https" else 80)
    return f"{split.scheme or 'http'}://{host}:{port}{split.path.rstrip('/')}"


def _holder(study: str) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "study": study, "since": time.time()}


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another tuner"
    return (
        f"the tuner of study '{holder.get('study', '?')}' (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')})"
    )


class FileLock:
    def __init__(self, key: str, study: str, folder: Path | None = None, poll_s: float = 0.2) -> None:
        self.key = key
        self.study = study
        name = re.sub(r"[^A-Za-z0-9.-]+", "-", key).strip("-")[:80]
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        self.path = (folder or cache_root() / "locks") / f"{name}-{digest}.lock"
        self.poll_s = poll_s
        self._fh: IO[str] | None = None
        self._told = False  # say whom we wait for once per run, not before every trial

    def acquire(self, notify: Notify) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise StorageError(
                f"Cannot create the server lock '{self.path}' ({exc.strerror}); make its folder writable "
                "or set AUTOTUNE_CACHE."
            ) from exc
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        notify(
                            f"waiting for {_describe(self._read_holder())} to finish its trial on {self.key}"
                        )
                        told = True
                    time.sleep(self.poll_s)
        except BaseException:
            fh.close()
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(_holder(self.study)))
        fh.flush()
        self._fh = fh
        if told:
            notify(f"the server {self.key} is ours now")

    def _read_holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.seek(0)
            fh.truncate()
        except OSError:
            pass
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


class RowLock:
    """A lease row in the storage's database: (server, holder, expires_at)."""

    TABLE = "autotune_server_locks"

    def __init__(self, storage_url: str, key: str, study: str, lease_s: float, poll_s: float = 1.0) -> None:
        import sqlalchemy  # noqa: PLC0415 - only for shared-database storages

        self._sa = sqlalchemy
        self.key = key
        self.study = study
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.me = json.dumps(_holder(study))
        self._engine = sqlalchemy.create_engine(storage_url, pool_pre_ping=True)
        meta = sqlalchemy.MetaData()
        self._table = sqlalchemy.Table(
            self.TABLE,
            meta,
            sqlalchemy.Column("server", sqlalchemy.String(512), primary_key=True),
            sqlalchemy.Column("holder", sqlalchemy.Text, nullable=False),
            sqlalchemy.Column("expires_at", sqlalchemy.Float, nullable=False),
        )
        self._meta = meta
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False
        self._told = False

    def _create_table(self) -> None:
        for attempt in range(5):  # several workers may create it at once
            try:
                self._meta.create_all(self._engine, checkfirst=True)
                return
            except self._sa.exc.SQLAlchemyError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _try(self) -> dict[str, Any] | None:
        """Take the row (after clearing an expired one); None when ours, else the holder."""
        t, sa = self._table, self._sa
        now = time.time()
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(t).where(t.c.server == self.key, t.c.expires_at < now))
                conn.execute(
                    sa.insert(t).values(server=self.key, holder=self.me, expires_at=now + self.lease_s)
                )
            return None
        except sa.exc.IntegrityError:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(t.c.holder).where(t.c.server == self.key)).first()
            try:
                return json.loads(row[0]) if row else {}
            except ValueError:
                return {}

    def acquire(self, notify: Notify) -> None:
        try:
            self._create_table()
            while (holder := self._try()) is not None:
                if not self._told:
                    notify(
                        f"waiting for {_describe(holder)} to finish its trial on {self.key} "
                        "(one tuner per server at a time)"
                    )
                    self._told = True
                time.sleep(self.poll_s)
        except self._sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"Cannot take the server lock in the study storage ({type(exc).__name__}); check --storage."
            ) from exc
        self.lost = False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="autotune-lock-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        t, sa = self._table, self._sa
        while not self._stop.wait(self.lease_s / 3):
            try:
                with self._engine.begin() as conn:
                    done = conn.execute(
                        sa.update(t)
                        .where(t.c.server == self.key, t.c.holder == self.me)
                        .values(expires_at=time.time() + self.lease_s)
                    )
                self.lost = done.rowcount == 0
            except sa.exc.SQLAlchemyError:
                pass  # the next renewal tries again; the lease outlives a few failures

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        t, sa = self._table, self._sa
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            with self._engine.begin() as conn:
                conn.execute(sa.delete(t).where(t.c.server == self.key, t.c.holder == self.me))

    def close(self) -> None:
        self._engine.dispose()


class Locks:
    """Several locks taken in order and released in reverse."""

    def __init__(self, *locks: ServerLock) -> None:
        self.locks = locks
        self.key = locks[0].key if locks else ""

    def acquire(self, notify: Notify) -> None:
        taken: list[ServerLock] = []
        try:
            for lock in self.locks:
                lock.acquire(notify)
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()


SHARED_DATABASES = ("postgresql", "mysql", "mariadb", "oracle", "mssql")


def server_lock(server_url: str, storage_url: str, study: str, lease_s: float) -> ServerLock:
    """The file lock on this machine, plus the storage's row lock where other machines can share both."""
    key = server_key(server_url)
    file_lock = FileLock(key, study)
    scheme = storage_url.split(":", 1)[0].split("+", 1)[0].lower()
    if not is_loopback(server_url) and scheme in SHARED_DATABASES:
        return Locks(file_lock, RowLock(storage_url, key, study, lease_s))
    return file_lock


@contextlib.contextmanager
def holding(lock: ServerLock | None, notify: Notify) -> Iterator[None]:
    if lock is None:
        yield
        return
    lock.acquire(notify)
    try:
        yield
    finally:
        lock.release()
