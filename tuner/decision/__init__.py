"""What the study decided, apart from how it is written: pure functions of the stored records.

    trials.py   what one trial record says: feasible, fully on the GPU, CPU-only, its speed interval
    picks.py    the named picks and their rules: decide() and the Decision it returns
    candidates.py  which trials a pick may name, the ties and their tie-break, the contenders, the front
    reasons.py  the words for each choice, how sure the ranking is
    baseline.py your current setting against the fastest pick; what a pick changes
    noise.py    a trial's recorded interference, judged

The report (tuner.report) writes these; the re-measure (tuner.remeasure) asks picks.contenders what to
measure again. Nothing here imports matplotlib or pandas.
"""
