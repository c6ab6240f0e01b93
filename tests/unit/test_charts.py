"""The benchmark charts (bench/charts.py): well-formed SVG with one bar per measured figure,
drawn from full results or from the figures committed beside the benchmarks page."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench import charts
from bench.measure import Plan, Results, Sample
from bench.sample import Image, Layer

ROOT = Path(__file__).parents[2]
IMG = ROOT / "docs" / "img"
SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: str) -> list[tuple[str, str]]:
    """(label, value text) of every bar, in order; the SVG must parse as XML."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    found = []
    for group in root.iter(f"{SVG}g"):
        texts = {t.get("class"): t.text or "" for t in group.iter(f"{SVG}text")}
        assert group.find(f"{SVG}rect") is not None
        found.append((texts["label"], texts["value"]))
    return found


def headings(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "group"]


def small() -> charts.Figures:
    figures = charts.Figures(measured="today", hosts=[1, 4], tools={"deploy": "deploy rollout",
                                                                     "loop-par": "parallel <ssh> loop"},
                             image_bytes=44e6, changed_bytes=1e6)
    for tool, base in (("deploy", 2.0), ("loop-par", 1.0)):
        for scenario in charts.SCENARIOS:
            for hosts in (1, 4):
                median = base * hosts
                figures.timings.append(charts.Timing(tool, scenario, hosts, median, median * 0.9, median * 1.2))
            figures.pulled.append(charts.Pulled(tool, scenario, 44.2e6 if scenario == "cold" else 1.07e6, 0))
    return figures


def test_rollout_chart_has_a_bar_per_tool_host_count_and_release() -> None:
    svg = charts.rollout_chart(small())
    assert headings(svg) == ["1 host, cold release", "1 host, warm release", "4 hosts, cold release",
                             "4 hosts, warm release"]
    assert bars(svg) == [("deploy rollout", "2.00 s"), ("parallel <ssh> loop", "1.00 s")] * 2 + [
        ("deploy rollout", "8.00 s"), ("parallel <ssh> loop", "4.00 s")] * 2
    assert "&lt;ssh&gt;" in svg  # labels are escaped


def test_bytes_chart_marks_what_the_release_needs() -> None:
    svg = charts.bytes_chart(small())
    assert bars(svg) == [("deploy rollout", "44.20 MB"), ("parallel <ssh> loop", "44.20 MB"),
                         ("deploy rollout", "1.07 MB"), ("parallel <ssh> loop", "1.07 MB")]
    references = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "reference"]
    assert references == ["whole image 44.00 MB", "changed layer 1.00 MB"]


def test_scaling_chart_divides_the_largest_host_count_by_one() -> None:
    svg = charts.scaling_chart(small())
    assert headings(svg) == ["cold release: T(4) / T(1)", "warm release: T(4) / T(1)"]
    assert bars(svg)[:2] == [("deploy rollout", "x4.00 (2.00 → 8.00 s)"),
                             ("parallel <ssh> loop", "x4.00 (1.00 → 4.00 s)")]


def test_a_longer_bar_is_a_larger_value() -> None:
    root = ET.fromstring(charts.rollout_chart(small()))
    widths = [float(rect.get("width", "0")) for group in root.iter(f"{SVG}g") for rect in group.iter(f"{SVG}rect")]
    assert widths[0] == pytest.approx(2 * widths[1])  # 2.00 s against 1.00 s, one scale
    assert widths[4] == pytest.approx(4 * widths[0])  # 8.00 s at 4 hosts against 2.00 s at 1


@pytest.mark.parametrize(("top", "ticks"), [(13.69, [0, 5, 10, 15]), (1.07, [0, 0.25, 0.5, 0.75, 1, 1.25]),
                                            (8, [0, 2, 4, 6, 8]), (0, [0, 1])])
def test_nice_ticks(top: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(top) == ticks


def test_figures_of_results_take_medians_of_successful_runs() -> None:
    results = Results(Plan(hosts=(1,), runs=3, contenders=("deploy",)),
                      images=[Image("v1", "1", (Layer("a", 40), Layer("b", 5)), 1),
                              Image("v2", "2", (Layer("a", 40), Layer("c", 6)), 1)])
    for run, seconds in enumerate((3.0, 1.0, 2.0)):
        results.samples.append(Sample("deploy", "warm", 1, run, seconds, 0.1, [1], [7 + run]))
    results.samples.append(Sample("deploy", "warm", 1, 3, 99.0, 0.1, [1], [99], error="failed"))
    figures = charts.figures_of(results)
    assert figures.timings == [charts.Timing("deploy", "warm", 1, 2.0, 1.0, 3.0)]
    assert figures.pulled == [charts.Pulled("deploy", "warm", 8, 9)]
    assert (figures.image_bytes, figures.changed_bytes) == (47, 6)


def test_figures_survive_json(tmp_path: Path) -> None:
    figures = small()
    charts.save_figures(figures, tmp_path / "f.json")
    assert charts.load_figures(tmp_path / "f.json") == figures


def test_published_charts_are_drawn_from_the_published_figures() -> None:
    figures = charts.load_figures(IMG / charts.FIGURES_FILE)
    for name, svg in charts.render(figures).items():
        assert (IMG / name).read_text() == svg, (
            "run: python3 -m bench --figures docs/img/bench-figures.json --charts docs/img")
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert all(f"(img/{name})" in page for name in charts.FILES.values())
    # Every timing is the one in the page's table, in its tool's column.
    table = page.split("### Rollout wall time", 1)[1].split("###", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ")]
    header, body = rows[0], rows[2:]  # below the --- row
    cells = {(row[0], row[1], label): row[header.index(label)].split(" **")[0]
             for row in body for label in header[2:]}
    assert cells and len(figures.timings) == len(cells)  # every cell of the table is charted
    for t in figures.timings:
        assert cells[str(t.hosts), t.scenario, figures.tools[t.tool]] == f"{t.median:.2f} ({t.low:.2f}-{t.high:.2f})"
