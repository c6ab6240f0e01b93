"""SVG charts of the main benchmark tables: rollout time, bytes per host, scaling.

The charts are drawn from `Figures`, the few numbers they show, which come from full results
(`figures_of`) or from a small JSON file (`load_figures`), so the published charts can be drawn
again from the figures committed beside them without the raw results. The SVG is written with
plain string templates: no plotting library, no fonts or scripts, text that stays selectable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

if TYPE_CHECKING:
    from .measure import Results

SCENARIOS = ("cold", "warm")
# One colour per tool, the same in every chart; deploy's is the strongest.
PALETTE = ("#1f5fa8", "#e08a1e", "#6a9e3a", "#8f5aa8", "#888888")
FILES = {"rollout": "bench-rollout-time.svg", "bytes": "bench-bytes-per-host.svg",
         "scaling": "bench-scaling.svg"}
FIGURES_FILE = "bench-figures.json"


# ---------------------------------------------------------------- the numbers


@dataclass(frozen=True)
class Timing:
    """Median and range of the wall time of one tool, release and host count."""

    tool: str
    scenario: str
    hosts: int
    median: float
    low: float
    high: float


@dataclass(frozen=True)
class Pulled:
    """Bytes one host received from the registry in one run of a tool: median and most."""

    tool: str
    scenario: str
    median: float
    high: float


@dataclass
class Figures:
    """What the charts show."""

    measured: str
    hosts: list[int]
    tools: dict[str, str]  # name -> label, in the order of the charts
    timings: list[Timing] = field(default_factory=list)
    pulled: list[Pulled] = field(default_factory=list)
    image_bytes: float = 0  # the whole image, compressed: what a cold pull fetches
    changed_bytes: float = 0  # the layer release 2 adds: what a warm pull should fetch

    def timing(self, tool: str, scenario: str, hosts: int) -> Timing | None:
        return next((t for t in self.timings if (t.tool, t.scenario, t.hosts) == (tool, scenario, hosts)),
                    None)


def figures_of(results: Results) -> Figures:
    """The figures of full benchmark results."""
    from .report import LABELS, _per_host, changed_layer_bytes, time_stat

    tools = {name: LABELS[name] for name in results.plan.contenders}
    figures = Figures(measured=f"{results.started} - {results.finished}", hosts=list(results.plan.hosts),
                      tools=tools)
    for hosts in results.plan.hosts:
        for scenario in SCENARIOS:
            for tool in tools:
                found = time_stat(results, tool, scenario, hosts)
                if found:
                    figures.timings.append(Timing(tool, scenario, hosts, found.median, found.low, found.high))
    for tool in tools:
        for scenario in SCENARIOS:
            pulled = _per_host(results, tool, scenario, "registry_bytes")
            if pulled:
                figures.pulled.append(Pulled(tool, scenario, pulled.median, pulled.high))
    if len(results.images) == 2:
        figures.image_bytes = results.images[1].total_bytes
        figures.changed_bytes = changed_layer_bytes(results) or 0
    return figures


def save_figures(figures: Figures, path: Path) -> None:
    """Write the figures as JSON."""
    path.write_text(json.dumps(asdict(figures), indent=1) + "\n")


def load_figures(path: Path) -> Figures:
    """Read figures written by `save_figures`."""
    data: dict[str, Any] = json.loads(path.read_text())
    return Figures(measured=data["measured"], hosts=list(data["hosts"]), tools=dict(data["tools"]),
                   timings=[Timing(**t) for t in data["timings"]], pulled=[Pulled(**p) for p in data["pulled"]],
                   image_bytes=data["image_bytes"], changed_bytes=data["changed_bytes"])


# ---------------------------------------------------------------- SVG


@dataclass(frozen=True)
class Bar:
    """One bar: a label, a value, an optional range (whisker) and the text printed after it."""

    label: str
    value: float
    text: str
    colour: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Group:
    """Bars under one heading, on one scale; `reference` draws a dashed line with a label."""

    title: str
    bars: list[Bar]
    reference: tuple[float, str] | None = None
    scale: float = 0  # the value at the right end; 0 = from the bars


WIDTH = 760
LEFT = 170  # the labels' column
RIGHT = 130  # room for the value text
BAR = 18
GAP = 6
HEAD = 30
AXIS = 22


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _number(value: float) -> str:
    return f"{value:g}" if value == round(value, 2) else f"{value:.2f}"


def bar_chart(title: str, description: str, groups: Sequence[Group], unit: str) -> str:
    """A horizontal bar chart, one block of bars per group, each group with its own axis."""
    plot = WIDTH - LEFT - RIGHT
    parts: list[str] = []
    y = 40
    for group in groups:
        top = group.scale or max([b.high or b.value for b in group.bars] + [group.reference[0] if group.reference else 0])
        ticks = nice_ticks(top)
        scale = plot / ticks[-1]
        height = len(group.bars) * (BAR + GAP)
        parts.append(f'<text class="group" x="{LEFT}" y="{y + 16}">{escape(group.title)}</text>')
        y += HEAD
        for tick in ticks:
            x = LEFT + tick * scale
            text = f"{_number(tick)} {unit}" if tick == ticks[-1] else _number(tick)
            parts.append(f'<line class="grid" x1="{x:.1f}" y1="{y - 4}" x2="{x:.1f}" y2="{y + height}"/>')
            parts.append(f'<text class="tick" x="{x:.1f}" y="{y + height + 14}">{escape(text)}</text>')
        for bar in group.bars:
            width = max(bar.value * scale, 1)
            middle = y + BAR / 2
            parts.append(f'<g class="bar"><title>{escape(bar.label)}: {escape(bar.text)}</title>'
                         f'<text class="label" x="{LEFT - 8}" y="{middle + 4}">{escape(bar.label)}</text>'
                         f'<rect x="{LEFT}" y="{y}" width="{width:.1f}" height="{BAR}" fill={quoteattr(bar.colour)}/>')
            end = LEFT + width
            if bar.low is not None and bar.high is not None and bar.high > bar.low:
                x1, x2 = LEFT + bar.low * scale, LEFT + bar.high * scale
                parts.append(f'<path class="range" d="M{x1:.1f} {middle}H{x2:.1f}M{x1:.1f} {middle - 4}V{middle + 4}'
                             f'M{x2:.1f} {middle - 4}V{middle + 4}"/>')
                end = max(end, x2)
            parts.append(f'<text class="value" x="{end + 6:.1f}" y="{middle + 4}">{escape(bar.text)}</text></g>')
            y += BAR + GAP
        if group.reference:
            value, label = group.reference
            x = LEFT + value * scale
            # The label goes on the side of the line with room for it.
            anchor, dx = ("end", -4) if x > LEFT + plot * 0.6 else ("start", 4)
            parts.append(f'<line class="reference" x1="{x:.1f}" y1="{y - height - 6}" x2="{x:.1f}" y2="{y}"/>'
                         f'<text class="reference" x="{x + dx:.1f}" y="{y - height - 8}" '
                         f'text-anchor="{anchor}">{escape(label)}</text>')
        y += AXIS
    height = y + 8
    style = (".title{font:bold 15px sans-serif}.group{font:bold 13px sans-serif}"
             ".label{font:12px sans-serif;text-anchor:end}.value{font:12px sans-serif}"
             ".tick{font:10px sans-serif;fill:#555;text-anchor:middle}"
             ".grid{stroke:#ddd;stroke-width:1}.range{stroke:#222;stroke-width:1.2;fill:none}"
             "line.reference{stroke:#c0392b;stroke-width:1.5;stroke-dasharray:5 3}"
             "text.reference{font:11px sans-serif;fill:#c0392b}")
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="title desc">',
        f'<title id="title">{escape(title)}</title>',
        f'<desc id="desc">{escape(description)}</desc>',
        f"<style>{style}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text class="title" x="12" y="22">{escape(title)}</text>',
        *parts,
        "</svg>",
        "",
    ])


def _colours(figures: Figures) -> dict[str, str]:
    return {tool: PALETTE[min(index, len(PALETTE) - 1)] for index, tool in enumerate(figures.tools)}


def _hosts(count: int) -> str:
    return f"{count} host" if count == 1 else f"{count} hosts"


def rollout_chart(figures: Figures) -> str:
    """Wall time of each tool by host count and release: median bar, min-max whisker."""
    colours = _colours(figures)
    groups = []
    for hosts in figures.hosts:
        for scenario in SCENARIOS:
            bars = [Bar(label, t.median, f"{t.median:.2f} s", colours[tool], t.low, t.high)
                    for tool, label in figures.tools.items()
                    for t in [figures.timing(tool, scenario, hosts)] if t]
            if bars:
                groups.append(Group(f"{_hosts(hosts)}, {scenario} release", bars))
    top = max((t.high for t in figures.timings), default=1)
    groups = [Group(g.title, g.bars, scale=top) for g in groups]  # one scale: host counts compare
    return bar_chart("Rollout wall time", "Seconds per rollout, median of the runs with the range "
                     f"from fastest to slowest, by tool, host count and release. Measured {figures.measured}.",
                     groups, "s")


def bytes_chart(figures: Figures) -> str:
    """Bytes each host pulled from the registry, per tool, against what the release needs."""
    colours = _colours(figures)
    groups = []
    references = {"cold": (figures.image_bytes, "whole image"), "warm": (figures.changed_bytes, "changed layer")}
    for scenario in SCENARIOS:
        bars = [Bar(label, p.median / 1e6, f"{p.median / 1e6:.2f} MB", colours[tool])
                for tool, label in figures.tools.items()
                for p in figures.pulled if (p.tool, p.scenario) == (tool, scenario)]
        if bars:
            size, what = references[scenario]
            reference = (size / 1e6, f"{what} {size / 1e6:.2f} MB") if size else None
            title = ("cold release: onto empty hosts" if scenario == "cold"
                     else "warm release: only the top layer changed")
            groups.append(Group(title, bars, reference))
    return bar_chart("Bytes each host pulls from the registry",
                     "Megabytes one host received from the registry in one run (IP level, TLS included), "
                     f"median, by tool and release, with the size the release needs. Measured {figures.measured}.",
                     groups, "MB")


def scaling_chart(figures: Figures) -> str:
    """How rollout time grows from 1 host to the most measured: T(N)/T(1) per tool."""
    colours = _colours(figures)
    big = max(figures.hosts)
    groups = []
    if 1 in figures.hosts and big > 1:
        for scenario in SCENARIOS:
            bars = []
            for tool, label in figures.tools.items():
                one, many = figures.timing(tool, scenario, 1), figures.timing(tool, scenario, big)
                if one and many and one.median:
                    ratio = many.median / one.median
                    bars.append(Bar(label, ratio, f"x{ratio:.2f} ({one.median:.2f} → {many.median:.2f} s)",
                                    colours[tool]))
            if bars:
                groups.append(Group(f"{scenario} release: T({big}) / T(1)", bars,
                                    (float(big), f"one host after the other: x{big}")))
    top = max([float(big), *(bar.value for group in groups for bar in group.bars)])
    groups = [Group(g.title, g.bars, g.reference, scale=top) for g in groups]  # one scale for both
    return bar_chart(f"Scaling from 1 to {big} hosts",
                     f"Median rollout time at {big} hosts divided by that at 1 host, by tool and release; "
                     f"lower is better, {big} is what doing the hosts one after the other costs. "
                     f"Measured {figures.measured}.", groups, "x")


def render(figures: Figures) -> dict[str, str]:
    """File name -> SVG text of every chart."""
    return {FILES["rollout"]: rollout_chart(figures), FILES["bytes"]: bytes_chart(figures),
            FILES["scaling"]: scaling_chart(figures)}


def write(figures: Figures, directory: Path) -> list[Path]:
    """Write the charts and the figures they show into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(figures).items():
        (directory / name).write_text(text)
        written.append(directory / name)
    save_figures(figures, directory / FIGURES_FILE)
    return [*written, directory / FIGURES_FILE]
