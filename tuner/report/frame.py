"""The trials as a table (one row per trial, the rows of trials.csv). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

import pandas as pd

from tuner.decision.trials import is_complete, is_measured, speed_interval
from tuner.schema import CSV_COLUMNS, TrialRecord

# Measurements that mean nothing for a trial that did not load (a stored placeholder is blanked).
_MEASUREMENT_COLUMNS = ("decode_tok_s", "decode_cv", "prefill_tok_s", "ttft_s")


def trials_frame(records: Iterable[TrialRecord]) -> pd.DataFrame:
    """One row per trial, sorted by trial number: schema.CSV_COLUMNS first, then the rest of to_row().

    A COMPLETE trial that did not load gets empty speed cells, never 0 tok/s.
    """
    rows = []
    for record in sorted(records, key=lambda r: r.number):
        row = record.to_row()
        interval = speed_interval(record) if is_complete(record) else None
        row["decode_ci_low"] = interval.low if interval is not None and interval.known else None
        row["decode_ci_high"] = interval.high if interval is not None and interval.known else None
        if is_complete(record) and not is_measured(record):
            for column in _MEASUREMENT_COLUMNS:
                row[column] = None
        rows.append(row)
    default = [f.name for f in fields(TrialRecord) if f.name != "constraints"]
    seen = list(dict.fromkeys([*CSV_COLUMNS, *default, *(key for row in rows for key in row)]))
    return pd.DataFrame(rows, columns=seen)
