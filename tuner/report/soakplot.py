"""The qualification summary's soak figure (one per model): decode tok/s, SM and memory clocks, temperature
and power, and throttle time over the soak. Drawn on the Agg canvas like tuner.report.plots, from plain
sample dicts (tuner.qualify.soak.SoakSample.to_dict: time_s, phase, decode_tok_s, telemetry [per GPU]), so
the report package needs nothing from the qualification's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from tuner.report.plots import DPI, figure_png

_PHASE_COLORS = {"heat": "#bbbbbb", "soak": "#1f77b4", "depth": "#ff7f0e"}


def _gpu_series(
    samples: Sequence[Mapping[str, Any]], field: str
) -> dict[int, tuple[list[float], list[float]]]:
    out: dict[int, tuple[list[float], list[float]]] = {}
    for s in samples:
        for g in s.get("telemetry") or ():
            value = g.get(field)
            if value is not None:
                xs, ys = out.setdefault(int(g.get("gpu", 0)), ([], []))
                xs.append(float(s["time_s"]) / 60)
                ys.append(float(value))
    return out


def _violations(samples: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Throttle seconds by cause since the first sample, summed over the GPUs."""
    first: dict[tuple[int, str], float] = {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    for s in samples:
        totals: dict[str, float] = {}
        for g in s.get("telemetry") or ():
            for cause, value in (g.get("violation_s") or {}).items():
                start = first.setdefault((int(g.get("gpu", 0)), cause), float(value))
                totals[cause] = totals.get(cause, 0.0) + max(0.0, float(value) - start)
        for cause, total in totals.items():
            xs, ys = out.setdefault(cause, ([], []))
            xs.append(float(s["time_s"]) / 60)
            ys.append(total)
    return out


def plot_soak(
    samples: Sequence[Mapping[str, Any]], title: str, collapse_spans_s: Sequence[tuple[float, float]] = ()
) -> Figure:
    """Stacked panels over the soak's minutes; the telemetry panels only where the probe gave telemetry.
    `collapse_spans_s`: (first, last) seconds of each clock collapse at normal temperature, shaded red."""
    telemetry = any(s.get("telemetry") for s in samples)
    panels = 4 if telemetry else 1
    fig = Figure(figsize=(9.5, 2.1 * panels + 0.6), dpi=DPI)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    for phase, color in _PHASE_COLORS.items():
        points = [
            (float(s["time_s"]) / 60, float(s["decode_tok_s"])) for s in samples if s.get("phase") == phase
        ]
        if points:
            label = {"heat": "heat soak (discarded)", "soak": "soak", "depth": "growing context depth"}[phase]
            ax.plot(*zip(*points, strict=True), ".", ms=3, color=color, label=label)
    ax.set_ylabel("decode tok/s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    if telemetry:
        ax = axes[1]
        for gpu, (xs, ys) in _gpu_series(samples, "sm_clock_mhz").items():
            ax.plot(xs, ys, lw=1, label=f"GPU {gpu} SM")
        for start, end in collapse_spans_s:
            ax.axvspan(start / 60, max(end, start + 1) / 60, color="#d62728", alpha=0.25, lw=0)
        ax.set_ylabel("SM clock MHz")
        memory = ax.twinx()
        for gpu, (xs, ys) in _gpu_series(samples, "mem_clock_mhz").items():
            memory.plot(xs, ys, lw=1, ls="--", color="#9467bd", label=f"GPU {gpu} memory")
        memory.set_ylabel("memory clock MHz")
        lines = ax.get_lines() + memory.get_lines()
        ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
        ax = axes[2]
        for gpu, (xs, ys) in _gpu_series(samples, "temperature_c").items():
            ax.plot(xs, ys, lw=1, color="#d62728", label=f"GPU {gpu} °C")
        ax.set_ylabel("temperature °C")
        power = ax.twinx()
        for gpu, (xs, ys) in _gpu_series(samples, "power_w").items():
            power.plot(xs, ys, lw=1, color="#2ca02c", label=f"GPU {gpu} W")
        for gpu, (xs, ys) in _gpu_series(samples, "power_limit_w").items():
            power.plot(xs, ys, lw=0.8, ls=":", color="#2ca02c", label=f"GPU {gpu} limit")
        power.set_ylabel("power W")
        ax.grid(alpha=0.3)
        ax = axes[3]
        series = _violations(samples)
        for cause, (xs, ys) in series.items():
            ax.plot(xs, ys, lw=1.2, label=cause)
        if series:
            ax.legend(fontsize=7, loc="upper left")
        ax.set_ylabel("throttle s (cum.)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes since the soak started (heat soak first)")
    fig.tight_layout()
    return fig


def soak_png(
    samples: Sequence[Mapping[str, Any]], title: str, collapse_spans_s: Sequence[tuple[float, float]] = ()
) -> bytes:
    return figure_png(plot_soak(samples, title, collapse_spans_s))
