"""The study's storage: opened safely by several workers at once, its failures said in one line, and what
dead or stopped workers left behind found and queued again. A part of the Optuna seam (tuner.study).

    make_storage(url, heartbeat_s, on_stale)   an Optuna storage; RDB ones record each running trial's
                                               heartbeat (Optuna's heartbeat_interval / grace_period)
    storage_errors(url)                        a failing storage (disk full, damaged, locked, unreachable),
                                               anywhere in the block, becomes one StorageError line
    creation_lock(url)                         one worker at a time creates a new SQLite file's tables
    close_storage(storage)                     its connections closed (a PostgreSQL storage opened to read)
    opened_storage(url)                        a block with the storage open, errors in one line, then closed
    study_names(url), study_attr(url, name, key), set_study_attr(url, name, key, value)
                                               what a plan keeps beside its studies (a fleet's outcomes)
    fail_stale(study, grace_s)                 RUNNING trials whose heartbeat stopped become FAIL
    recover_interrupted(study)                 FAIL trials without a measurement are queued again, once

Recovery never asks which host or process ran a trial: a heartbeat older than 3 intervals means its worker
is gone, whatever container, host name or PID it had. Optuna's RetryFailedTrialCallback (in 5.0
RetryHeartbeatStaleTrialCallback) is not used to re-queue: it copies the trial's distributions with its
params, and the baseline's num_gpu -1 lies outside its distribution on purpose, which create_trial refuses;
recover_interrupted re-queues the params as the rest of the study does (enqueue_trial).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.errors import ConfigError, StorageError, TunerError
from tuner.records import record_of
from tuner.redact import mask_url, redact
from tuner.schema import TrialRecord

_BACKGROUND = re.compile(r"\(Background on this error at: [^)]*\)?")  # SQLAlchemy's link, not the cause


def _storage_problem(exc: BaseException) -> BaseException | None:
    """The storage error behind `exc`, the deepest one in its chain: Optuna wraps the driver's error in
    StorageInternalError, and may replace both by an AssertionError while it fails a trial."""
    import sqlalchemy.exc  # noqa: PLC0415 - Optuna's own dependency

    found: BaseException | None = None
    seen: BaseException | None = exc
    for _ in range(12):
        if seen is None:
            break
        if isinstance(seen, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)) or (
            isinstance(seen, OSError) and not isinstance(seen, ConnectionError)
        ):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def storage_error(url: str, exc: BaseException) -> StorageError:
    """One line for a storage failure: what failed, the storage (credentials masked) and what to do."""
    where = mask_url(url)
    detail = redact(" ".join(str(getattr(exc, "orig", None) or exc).split()))[:200] or type(exc).__name__
    low = detail.lower()
    if "full" in low or "no space" in low or "disk i/o" in low or "too large" in low:
        return StorageError(
            f"The study storage '{where}' cannot be written ({detail}): its disk is full or failing; free some "
            "space (finished trials are kept) and run the same command to resume, or pass another --storage."
        )
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StorageError(
            f"The study storage '{where}' is damaged ({detail}); move the file away or pass another --storage."
        )
    if "locked" in low:
        return StorageError(
            f"The study storage '{where}' stayed locked by another process ({detail}); wait for it, or pass "
            "another --storage."
        )
    return StorageError(f"The study storage '{where}' failed ({detail}); check --storage.")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a storage failure anywhere in the block into a one-line StorageError."""
    try:
        yield
    except TunerError:
        raise
    except Exception as exc:
        problem = _storage_problem(exc)
        if problem is None:
            raise
        raise storage_error(url, problem) from exc


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Several workers starting at once on a new SQLite file: one creates Optuna's tables, the others wait
    (an flock next to the file) instead of failing on the half-made schema."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        yield
        return
    import fcntl  # noqa: PLC0415

    path = url[len("sqlite:///") :].split("?", 1)[0]
    try:
        fh = open(path + ".lock", "a")  # noqa: SIM115
    except OSError:
        yield  # a read-only folder: nothing to create there anyway
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_storage(
    url: str, *, heartbeat_s: int | None = None, on_stale: Callable[..., None] | None = None
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL; "in-memory" is Optuna's InMemoryStorage (nothing kept after the run).

    With `heartbeat_s`, an RDB storage records a heartbeat of every running trial; a trial whose heartbeat
    is older than 3 of them (its worker died, on whatever host) is failed by Optuna's fail_stale_trials,
    which calls `on_stale(study, trial)`."""
    if url == "in-memory":
        return optuna.storages.InMemoryStorage()
    kwargs: dict[str, Any] = {}
    if heartbeat_s:
        kwargs = {
            "heartbeat_interval": int(heartbeat_s),
            "grace_period": 3 * int(heartbeat_s),
            "heartbeat_stale_trial_callback": on_stale,
        }
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and os.path.dirname(path):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"--storage '{mask_url(url)}': cannot create its folder ({exc.strerror}); pass a writable path."
                ) from exc
        engine = {"connect_args": {"timeout": 30.0}}
    else:
        engine = {}
    last: Exception | None = None
    for attempt in range(5):  # workers starting at once on a new database race to create its tables
        try:
            with creation_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
        except ImportError as exc:
            last = exc
            break
        except Exception as exc:  # noqa: BLE001 - any driver error: said in one line below
            last = exc
            if _storage_problem(exc) is None or not url.startswith(("sqlite", "postgresql", "mysql")):
                break
            time.sleep(0.2 * (attempt + 1))
    assert last is not None
    problem = _storage_problem(last)
    if problem is not None and url.startswith("sqlite:///") and os.path.exists(url[len("sqlite:///") :]):
        raise storage_error(url, problem) from last
    detail = _BACKGROUND.sub("", redact(" ".join(str(last).split()))).strip()[:200] or type(last).__name__
    if url.startswith("sqlite") or "://" not in url:
        fix = "use e.g. sqlite:///studies/autotune.db"
    elif isinstance(last, ImportError):
        fix = "install its driver (PostgreSQL: pip install 'psycopg[binary]', installed with autotune)"
    else:
        fix = "check the server, user, password and database name in --storage"
    raise ConfigError(f"--storage '{mask_url(url)}' cannot be opened ({detail}); {fix}.") from last


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Close an RDB storage's connections now (a storage opened only to read, or to check it opens): a
    PostgreSQL connection left to the garbage collector is closed without a goodbye to the server."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


@contextlib.contextmanager
def opened_storage(url: str) -> Iterator[optuna.storages.BaseStorage]:
    """The storage opened to read or to set a few values, its failures one StorageError line, its
    connections closed after the block."""
    opened = make_storage(url)
    try:
        with storage_errors(url):
            yield opened
    finally:
        close_storage(opened)


def study_names(url: str) -> list[str]:
    """Every study in the storage, by name."""
    with opened_storage(url) as opened:
        return [s.study_name for s in opened.get_all_studies()]


def study_attr(url: str, study_name: str, key: str) -> Any:
    """A user attribute of a stored study; None when the study or the attribute is not there."""
    with opened_storage(url) as opened:
        try:
            study_id = opened.get_study_id_from_name(study_name)
        except KeyError:
            return None
        return opened.get_study_user_attrs(study_id).get(key)


def set_study_attr(url: str, study_name: str, key: str, value: Any) -> bool:
    """Set a user attribute of a stored study; False when there is no such study."""
    with opened_storage(url) as opened:
        try:
            study_id = opened.get_study_id_from_name(study_name)
        except KeyError:
            return False
        opened.set_study_user_attr(study_id, key, value)
        return True


def first_heartbeat(trial: optuna.Trial) -> None:
    """Record the trial's heartbeat now. Optuna's heartbeat thread records its first one a moment after the
    objective starts; a worker killed in that moment would leave a RUNNING trial with no heartbeat at all,
    which Optuna never calls stale."""
    storage = trial.study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval:
        storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]


def fail_stale(study: optuna.Study, grace_s: float) -> None:
    """Optuna's heartbeat check: RUNNING trials whose heartbeat stopped (their worker died, on any host)
    become FAIL; recover_interrupted then queues them again. A RUNNING trial that never said it keeps a
    heartbeat (a worker killed before its objective began, or an autotune from before heartbeats: Optuna would
    never call it stale) is failed once it is older than the grace period."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        started = trial.datetime_start
        old = started is None or abs((now - started.replace(tzinfo=None)).total_seconds()) > grace_s
        if "heartbeat_s" not in worker and old:  # not one another worker has just started
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                study.tell(trial.number, state=TrialState.FAIL)


def recover_interrupted(study: optuna.Study) -> list[TrialRecord]:
    """Re-queue the params of every trial that ended without a measurement, once; return those trials.

    A FAIL trial without a record was interrupted: its worker died (found by the heartbeat), was stopped
    (Ctrl-C, SIGTERM), lost its server, or spent its attempts. Its params go back in the queue so the study
    runs it again: nothing finished is lost, nothing is duplicated.
    """
    done = set(study.user_attrs.get("requeued_trials", []))
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if "record" in trial.user_attrs or trial.number in done:
            continue
        done.add(trial.number)
        if trial.params:
            attrs = {"requeued_from": trial.number}
            if "fixed_ctx" in trial.user_attrs:  # the baseline's own context
                attrs["fixed_ctx"] = trial.user_attrs["fixed_ctx"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a baseline's num_gpu -1 is outside the range on purpose
                study.enqueue_trial(dict(trial.params), user_attrs=attrs)
        recovered.append(record_of(trial))
    if recovered:
        study.set_user_attr("requeued_trials", sorted(done))
    return recovered


def describe_recovered(record: TrialRecord) -> str:
    gpu = "auto" if record.num_gpu < 0 else record.num_gpu
    ctx = record.num_ctx or "default"
    why = f": {record.error.splitlines()[0][:160]}" if record.error else ""
    return (
        f"recovered trial #{record.number} ({record.tag} num_gpu={gpu} ctx={ctx}), left unfinished{why}; "
        "it runs again"
    )
