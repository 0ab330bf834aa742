"""What the study decided, apart from how it is written: pure functions of the stored records.

    trials.py   what one trial record says: feasible, fully on the GPU, CPU-only, its speed interval
    picks.py    the named picks, the ties, how sure the ranking is, your current setting, the contenders
    noise.py    a trial's recorded interference, judged

The report (tuner.report) writes these; the re-measure (tuner.remeasure) asks picks.contenders what to
measure again. Nothing here imports matplotlib or pandas.
"""
