"""python -m bench [--hosts 1,4,8] [--runs 5] [--json PATH] [--markdown PATH] [--charts DIR] [--smoke]
| --report PATH [--charts DIR] | --figures PATH --charts DIR | --no-registry [--hosts 1,8] [--runs 3] [--base-mib 40]
| --fanout 1,50,100,150 [--runs 3]"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from tests.lab.lab import MAX_HOSTS

from . import charts, report
from .measure import ALL_CONTENDERS, RESULTS_DIR, Plan, Results, run_benchmark
from .sample import BASE_BYTES


def _hosts(text: str) -> tuple[int, ...]:
    try:
        hosts = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not hosts or not all(1 <= n <= MAX_HOSTS for n in hosts):
        raise argparse.ArgumentTypeError(f"host counts go from 1 to {MAX_HOSTS}")
    return hosts


def _fanout(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if len(sizes) < 2 or not all(1 <= n <= 1000 for n in sizes):
        raise argparse.ArgumentTypeError("at least two host counts, from 1 to 1000")
    return sizes


def _contenders(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in ALL_CONTENDERS]
    if unknown or "deploy" not in names:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(ALL_CONTENDERS)}, deploy included")
    return names


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    default = Plan()
    parser.add_argument("--hosts", type=_hosts, default=default.hosts, metavar="N,N,...",
                        help="host counts (default 1,4,8)")
    parser.add_argument("--runs", type=int, default=default.runs, help="repetitions (default 5)")
    parser.add_argument("--contenders", type=_contenders, default=default.contenders, metavar="NAMES",
                        help=f"comma-separated among {','.join(ALL_CONTENDERS)} (default all)")
    parser.add_argument("--help-runs", type=int, default=default.help_runs,
                        help="`deploy --help` timings (default 20)")
    parser.add_argument("--bundle-kib", type=int, default=default.bundle_bytes // 1024,
                        help="size of the app's own bytes in the top layer (default 1024)")
    parser.add_argument("--base-mib", type=int, default=BASE_BYTES // 2**20,
                        help="with --no-registry: size of the image's base layer (default 40)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up round")
    parser.add_argument("--no-phases", action="store_true", help="skip the `deploy -v` phase profile")
    parser.add_argument("--smoke", action="store_true",
                        help="1 host, 1 run, deploy and the parallel loop only")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/<time>.json)")
    parser.add_argument("--markdown", type=Path, help="report file (default: beside the JSON, .md)")
    parser.add_argument("--no-registry", action="store_true",
                        help="measure registry-less rollouts instead: deploy with app.registry false "
                             "against docker save | ssh docker load (bench/noregistry.py)")
    parser.add_argument("--fanout", type=_fanout, metavar="N,N,...",
                        help="measure `deploy status` against N sshd-only hosts on loopback instead "
                             "(bench/fanout.py); needs no lab")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="render the report of saved results; measure nothing")
    parser.add_argument("--charts", type=Path, metavar="DIR",
                        help=f"also write the SVG charts and the figures they show ({charts.FIGURES_FILE}) to DIR")
    parser.add_argument("--figures", type=Path, metavar="JSON",
                        help=f"draw the charts of saved figures (a {charts.FIGURES_FILE}) into --charts DIR; "
                             "measure nothing")
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan the options describe."""
    if args.smoke:
        return Plan.smoke()
    return replace(Plan(), hosts=args.hosts, runs=args.runs, contenders=args.contenders,
                   help_runs=args.help_runs, bundle_bytes=args.bundle_kib * 1024,
                   warmup=not args.no_warmup, phases=not args.no_phases)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _charts(figures: charts.Figures, directory: Path) -> None:
    for path in charts.write(figures, directory):
        _log(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Measure (or re-render), save JSON and Markdown, print the Markdown."""
    args = parse(argv)
    if args.figures:
        if not args.charts:
            raise SystemExit("--figures needs --charts DIR")
        _charts(charts.load_figures(args.figures), args.charts)
        return
    if args.report:
        results = report.load(args.report)
        print(report.render(results))
        if args.charts:
            _charts(charts.figures_of(results), args.charts)
        return
    json_path: Path = args.json or RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    markdown_path: Path = args.markdown or json_path.with_suffix(".md")
    if args.no_registry:
        _no_registry(args, json_path, markdown_path)
        return
    if args.fanout:
        _fanout_run(args, json_path, markdown_path)
        return

    def save(results: Results) -> None:
        report.save(results, json_path)

    results = run_benchmark(plan_of(args), _log, workdir=RESULTS_DIR / "work", save=save)
    text = report.render(results)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(text)
    _log(f"results in {json_path}, report in {markdown_path}")
    if args.charts:
        _charts(charts.figures_of(results), args.charts)
    print(text)


def _no_registry(args: argparse.Namespace, json_path: Path, markdown_path: Path) -> None:
    from . import noregistry

    found = noregistry.run(args.hosts, args.runs, RESULTS_DIR / "work-noregistry", _log, args.bundle_kib * 1024,
                           args.base_mib * 2**20)
    noregistry.save(found, json_path)
    _publish(noregistry.render(found), json_path, markdown_path)


def _fanout_run(args: argparse.Namespace, json_path: Path, markdown_path: Path) -> None:
    from . import fanout

    found = fanout.run(args.fanout, args.runs, _log)
    fanout.save(found, json_path)
    _publish(fanout.render(found), json_path, markdown_path)


def _publish(text: str, json_path: Path, markdown_path: Path) -> None:
    """Write the Markdown report beside the saved JSON, say where both are, print the report."""
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(text)
    _log(f"results in {json_path}, report in {markdown_path}")
    print(text)


if __name__ == "__main__":
    main()
