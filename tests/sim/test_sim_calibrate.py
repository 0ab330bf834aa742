from __future__ import annotations

import re

from tuner.sim.calibrate import DEFAULT_CSV, run


def test_calibration_lands_close_on_the_public_numbers() -> None:
    text = run(DEFAULT_CSV)
    pp = re.search(r"prompt \(pp\): (\d+) rows, median \|sim/measured - 1\| = ([\d.]+)%", text)
    tg = re.search(r"decode \(tg\): (\d+) rows, median \|sim/measured - 1\| = ([\d.]+)%", text)
    assert pp and tg
    assert int(tg.group(1)) >= 25 and float(tg.group(2)) < 10
    assert int(pp.group(1)) >= 20 and float(pp.group(2)) < 25
    assert "Skipped" in text and "MoE" in text
