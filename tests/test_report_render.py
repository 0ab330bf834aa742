"""The report as a user sees it: rendered in headless Chromium (no console errors, the answer on the first
screen), server text kept as text in report.md and report.html, and the Pareto plot's labels, legend,
axes and failed loads where they belong."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from tests.chromium import Chromium, find_chromium
from tests.test_report import GPU_BYTES, Q4, Q8, make_meta, normal_study, trial
from tuner.decision.trials import decode_of, vram_of
from tuner.report import decide, write_report
from tuner.report.frontplot import plot_pareto
from tuner.report.plots import tag_labels
from tuner.report.render import escape_md, render_html, render_markdown
from tuner.units import GiB

HOSTILE = "<script>alert('x')</script> **bold** [link](http://evil.example) | pipe `tick` _under_"


def hostile_study():
    records = normal_study()
    records.append(replace(trial(len(records), Q8, 49, 32768), error=HOSTILE))  # did not load, this message
    records.append(
        replace(
            trial(len(records), Q8, 49, 32768),
            num_gpu=10,
            error="model requires more system memory (70.1 GiB) than is available (60.0 GiB)",
        )
    )
    records.append(
        replace(
            trial(len(records), Q8, 49, 16384),
            error="predicted to exceed memory: GPU0 needs 12.2 GiB with compute and context x 1.6",
            predicted_skip=True,
            predicted_vram_bytes=int(12.2 * GiB),
        )
    )
    return records


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    write_report(make_meta(), hostile_study(), out)
    return out


def chromium_or_skip() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("AUTOTUNE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is required here (AUTOTUNE_REQUIRE_CHROMIUM=1); apt-get install chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it)")
    return binary


def test_report_html_renders_in_headless_chromium_with_the_answer_on_the_first_screen(report_dir, tmp_path):
    with Chromium(chromium_or_skip(), width=1280, height=1000) as browser:
        browser.open(report_dir / "report.html")
        assert browser.errors() == []
        assert browser.evaluate("document.querySelectorAll('script').length") == 0
        assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert browser.evaluate("document.images.length") == 3
        first = browser.evaluate(
            "(() => { const t = document.querySelector('table.decision').getBoundingClientRect();"
            " const p = document.querySelector('p.first-plot img').getBoundingClientRect();"
            " return {table: t.bottom, plotTop: p.top, plot: p.bottom, width: p.width}; })()"
        )
        assert first["table"] < first["plotTop"] and first["plot"] <= 1000, first
        assert first["width"] > 700
        rows = browser.evaluate("document.querySelectorAll('table.decision tbody tr').length")
        assert rows == 5  # your current setting and the four picks
        text = browser.evaluate("document.body.innerText")
        assert HOSTILE.replace("**", "").split("(")[0][:20] in text or "<script>alert" in text
        browser.screenshot(tmp_path / "first-screen.png")
    assert (tmp_path / "first-screen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_server_text_stays_text_in_markdown_and_html(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "<script>" not in md and "\\<script\\>" in md
    assert "\\| pipe" in md and "\\*\\*bold\\*\\*" in md
    row = next(line for line in md.splitlines() if "alert" in line)
    assert row.count(" | ") == 6  # the message stays one cell of its 7-column table
    page = (report_dir / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert" in page
    assert "**bold**" in page  # literal asterisks: the escape is undone as text, never as markup
    assert escape_md("a_b*c") == "a\\_b\\*c"
    blocks_md = render_markdown([])
    assert blocks_md == "\n"
    assert "<strong>x</strong>" in render_html(
        [__import__("tuner.report.render", fromlist=["Block"]).Block("p", "**x** \\*y\\*")], "t"
    )


def test_failed_loads_say_whether_host_ram_or_the_gpu_ran_out(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "did not load: host RAM" in md and "did not load (out of memory)" in md
    assert "not loaded: predicted not to fit" in md


def test_pick_labels_point_at_their_own_points_and_never_overlap():
    for records in (normal_study(), hostile_study()):
        meta = make_meta()
        decision = decide(meta, records)
        fig = plot_pareto(meta, records, decision.picks)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ax = fig.axes[0]
        labels = [t for t in ax.texts if (t.get_gid() or "").startswith("pick:")]
        current = [t for t in ax.texts if (t.get_gid() or "").startswith("current:")]
        numbers = {p.trial.number for p in decision.picks.values()}
        base = decision.baseline.baseline
        assert len(current) == (0 if base is None or base.number in numbers else 1)
        assert {int(t.get_gid().split(":")[1]) for t in labels} == numbers
        by_number = {r.number: r for r in records}
        boxes = []
        for label in labels + current:
            r = by_number[int(label.get_gid().split(":")[1])]
            assert label.xy == pytest.approx((vram_of(r) / GiB, decode_of(r)))
            box = Text.get_window_extent(label, renderer)
            frame = ax.get_window_extent(renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            boxes.append(box)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), "two pick labels overlap"


def test_legends_show_the_part_of_each_tag_that_differs():
    assert tag_labels([Q4, Q8]) == {Q4: "q4_K_M", Q8: "q8_0"}
    paths = ["/m/llama3-8b-Q4_0.gguf", "/m/llama3-8b-Q8_0.gguf", "/m/llama3-8b-F16.gguf"]
    assert list(tag_labels(paths).values()) == ["Q4_0", "Q8_0", "F16"]
    assert tag_labels(["deepseek-r1:32b"]) == {"deepseek-r1:32b": "deepseek-r1:32b"}
    assert tag_labels(["a:7b-q4_0", "b:7b-q4_0"]) == {"a:7b-q4_0": "a", "b:7b-q4_0": "b"}


def test_axes_fit_the_data_and_mark_the_gpu_memory():
    small = [trial(1, Q4, 49, 32768), trial(2, Q4, 30, 4096)]
    data_max = max(vram_of(r) for r in small) / GiB
    far = make_meta(
        fingerprint={**make_meta().fingerprint, "gpus": [{"name": "H100", "memory_bytes": 80 * GiB}]}
    )
    fig = plot_pareto(far, small)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] <= data_max * 1.4
    assert any("GPU memory 80.0 GiB →" in t.get_text() for t in ax.texts)
    near = plot_pareto(make_meta(), small).axes[0]
    assert near.get_xlim()[1] >= GPU_BYTES / GiB
    assert any(t.get_text() == f"GPU memory {GPU_BYTES / GiB:.1f} GiB" for t in near.texts)


def test_failed_loads_are_drawn_at_their_predicted_vram():
    records = hostile_study()
    fig = plot_pareto(make_meta(), records)
    ax = fig.axes[0]
    below = [(x, y) for c in ax.collections for x, y in c.get_offsets() if y < 0]  # the "did not load" band
    skip = next(r for r in records if r.predicted_skip)
    assert any(abs(x - skip.predicted_vram_bytes / GiB) < 1e-6 for x, _ in below)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "did not load: host RAM" in legend and "did not load: GPU memory" in legend
    assert "not loaded: predicted not to fit" in legend
