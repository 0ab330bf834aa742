"""One tuner per server (tuner.serverlock): the file lock every tuner on this machine takes, and the lease
row in a shared database for tuners on other machines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tuner.serverlock import FileLock, Locks, RowLock, is_loopback, server_key, server_lock


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://127.0.0.1:11434", "http://loopback:11434"),
        ("http://localhost:11434", "http://loopback:11434"),
        ("http://0.0.0.0:11434", "http://loopback:11434"),
        ("http://[::1]:11434", "http://loopback:11434"),
        ("https://gpu-box:443/ollama/", "https://gpu-box:443/ollama"),
    ],
)
def test_one_key_per_server(url, key):
    assert server_key(url) == key


def test_loopback():
    assert is_loopback("http://127.0.0.2:1") and not is_loopback("http://10.0.0.5:11434")


def test_shared_databases_and_remote_servers_also_take_the_row_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    assert isinstance(server_lock("http://127.0.0.1:11434", "postgresql://db/x", "s", 90), FileLock)
    assert isinstance(server_lock("http://10.0.0.5:11434", "sqlite:///x.db", "s", 90), FileLock)
    pytest.importorskip("sqlalchemy")
    both = server_lock("http://10.0.0.5:11434", "sqlite:///" + str(tmp_path / "x.db"), "s", 90)
    assert isinstance(both, FileLock)  # SQLite is one machine's file: the file lock covers it


def test_a_second_worker_waits_and_says_for_whom(tmp_path):
    first = FileLock("http://loopback:1", "study-a", folder=tmp_path, poll_s=0.01)
    second = FileLock("http://loopback:1", "study-b", folder=tmp_path, poll_s=0.01)
    first.acquire(print)
    notes: list[str] = []
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (second.acquire(notes.append), got.set()))
    waiter.start()
    while not notes:
        time.sleep(0.01)
    assert not got.is_set()
    assert "study 'study-a'" in notes[0] and f"pid {os.getpid()}" in notes[0]
    first.release()
    waiter.join(timeout=30)
    assert got.is_set()
    second.release()


HOLD = """
import sys, time
from pathlib import Path
from tuner.serverlock import FileLock
lock = FileLock("http://loopback:2", "holder", folder=Path(sys.argv[1]))
lock.acquire(print)
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_frees_the_server_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        lock = FileLock("http://loopback:2", "me", folder=tmp_path, poll_s=0.01)
        notes: list[str] = []
        taker = threading.Thread(target=lock.acquire, args=(notes.append,))
        taker.start()
        while not notes:
            time.sleep(0.01)
        assert "study 'holder'" in notes[0]
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up at all: the kernel drops its flock
        taker.join(timeout=30)
        assert not taker.is_alive()
        lock.release()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def test_the_row_lock_waits_for_its_holder_and_takes_over_an_expired_lease(tmp_path):
    url = f"sqlite:///{tmp_path}/locks.db"
    a = RowLock(url, "http://gpu-box:11434", "a", lease_s=60, poll_s=0.01)
    b = RowLock(url, "http://gpu-box:11434", "b", lease_s=60, poll_s=0.01)
    a.acquire(print)
    notes: list[str] = []
    taker = threading.Thread(target=b.acquire, args=(notes.append,))
    taker.start()
    while not notes:
        time.sleep(0.01)
    assert "study 'a'" in notes[0]
    a.release()
    taker.join(timeout=30)
    assert not taker.is_alive()
    # b dies without releasing; a lease that is not renewed expires and the next worker takes the server
    b._stop.set()
    b._renewer.join()  # type: ignore[union-attr]
    c = RowLock(url, "http://gpu-box:11434", "c", lease_s=0.2, poll_s=0.01)
    with b._engine.begin() as conn:  # b's lease, as if its holder had died long ago
        conn.execute(b._sa.update(b._table).values(expires_at=time.time() - 1))
    c.acquire(print)
    c.release()
    for lock in (a, b, c):
        lock.close()


def test_locks_release_in_reverse_and_give_back_what_they_took_on_failure(tmp_path):
    taken: list[str] = []

    class Fake:
        def __init__(self, key, fail=False):
            self.key, self.fail = key, fail

        def acquire(self, notify):
            if self.fail:
                raise KeyboardInterrupt
            taken.append(self.key)

        def release(self):
            taken.remove(self.key)

    with pytest.raises(KeyboardInterrupt):
        Locks(Fake("a"), Fake("b", fail=True)).acquire(print)
    assert taken == []
