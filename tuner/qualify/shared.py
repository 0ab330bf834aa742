"""What the workers of one plan share through its storage (a fleet on PostgreSQL, or several workers on one
machine): each finished model's outcome, kept on its study as a user attribute. A worker skips a model that
another worker of the same machine finished (and soaked), and `autotune qualify --summary` judges every
host of the fleet from the storage alone."""

from __future__ import annotations

from tuner.qualify.state import DONE, ModelOutcome
from tuner.qualify.summary import redacted
from tuner.storage import set_study_attr, study_attr

OUTCOME_ATTR = "qualify_outcome"  # on each model's study: its ModelOutcome, once done


def share(storage: str, outcome: ModelOutcome) -> None:
    """Keep a finished model's outcome on its study (a failed one is not shared: another worker tries it)."""
    if outcome.status == DONE and outcome.study:
        set_study_attr(
            storage, outcome.study, OUTCOME_ATTR, redacted(outcome.to_dict())
        )  # no secret in the db


def shared_outcome(storage: str, study: str, fingerprint_id: str | None = None) -> ModelOutcome | None:
    """The finished outcome stored on `study` (measured on a machine with that fingerprint id), or None."""
    data = study_attr(storage, study, OUTCOME_ATTR)
    if not isinstance(data, dict):
        return None
    outcome = ModelOutcome.from_dict(data)
    if outcome.status != DONE or (fingerprint_id is not None and outcome.fingerprint_id != fingerprint_id):
        return None
    return outcome
