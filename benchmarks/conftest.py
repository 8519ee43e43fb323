"""Reporting shared by every benchmarks/test_*.py: figures, then ratio lines.

Benchmarks report ratios measured in one run (fast vs reference vs peer),
never a bare time, because shared machines drift.  A benchmark records what
it measured with the `perf` fixture:

    def test_fast(benchmark, perf):
        benchmark.pedantic(encode, rounds=7, iterations=1, warmup_rounds=1)
        perf.rate("cpp word", megabytes, benchmark)      # MB/s from the median
        perf.record("peak memory", 1.5, "GiB")           # or any figure by hand

and a module lists the comparisons to print at the end in PERF_REPORT, as
(label, numerator, denominator or None, target or None):

    PERF_REPORT = [
        ("cpp word / reference word", "cpp word", "reference word", 15.0),  # a ratio
        ("cpp word", "cpp word", None, 200.0),                              # a figure vs a target
    ]

At the end of the session every figure is printed, then every line of every
collected module's PERF_REPORT (lines whose figures were not measured, e.g.
a peer that is not installed, say so).  Nothing fails on a missed target:
tests assert correctness, benchmarks measure.  With --benchmark-disable each
benchmark runs once as a smoke test and no figures are recorded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_FIGURES = pytest.StashKey[Dict[str, Tuple[float, str]]]()
_REPORT = pytest.StashKey[List[tuple]]()
_LOAD = pytest.StashKey[float]()


def timings_missing(benchmark) -> bool:
    """--benchmark-disable: each benchmark ran once as a smoke test, with no timings."""
    return getattr(benchmark, "disabled", False) or getattr(benchmark, "stats", None) is None


class Perf:
    """Collects named figures for the end-of-session summary."""

    def __init__(self, figures: Dict[str, Tuple[float, str]]):
        self.figures = figures

    def record(self, name: str, value: float, unit: str) -> None:
        self.figures[name] = (float(value), unit)

    def rate(self, name: str, amount: float, benchmark, unit: str = "MB/s") -> Optional[float]:
        """`amount` per second of the benchmark's median round (e.g. MB/s); also
        stored in benchmark.extra_info[unit].  None when benchmarks are disabled."""
        if timings_missing(benchmark):
            return None
        value = amount / benchmark.stats.stats.median
        benchmark.extra_info[unit] = round(value, 3)
        self.record(name, value, unit)
        return value


@pytest.fixture(scope="session")
def perf(pytestconfig) -> Perf:
    return Perf(pytestconfig.stash.setdefault(_FIGURES, {}))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpora folder; skips when it is absent (e.g. a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


def pytest_sessionstart(session) -> None:
    if hasattr(os, "getloadavg"):  # other work on a shared machine distorts timings
        session.config.stash[_LOAD] = os.getloadavg()[0]


def pytest_collection_modifyitems(config, items) -> None:
    lines, seen = config.stash.setdefault(_REPORT, []), set()
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module not in seen:
            seen.add(module)
            lines.extend(getattr(module, "PERF_REPORT", ()))


def _fmt(value: float, unit: str = "") -> str:
    text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def report_lines(figures: Dict[str, Tuple[float, str]], report: List[tuple]) -> List[str]:
    """The summary as text lines (figures, then comparisons)."""
    out: List[str] = []
    if not figures:
        return ["no figures recorded (benchmarks disabled, skipped or failed)"]
    width = max(len(n) for n in figures)
    out += [f"{name:<{width}}  {_fmt(v, u):>14}" for name, (v, u) in figures.items()]
    if report:
        out.append("")
        width = max(len(line[0]) for line in report)
    for label, num, den, target in report:
        missing = [k for k in (num, den) if k is not None and k not in figures]
        if missing:
            out.append(f"{label:<{width}}  {'-':>14}  (not measured: {', '.join(missing)})")
            continue
        value, unit = figures[num]
        shown = _fmt(value, unit)
        if den is not None:
            value = value / figures[den][0]
            shown, unit = f"{value:.2f}x", "x"
        line = f"{label:<{width}}  {shown:>14}"
        if target is not None:
            line += f"  target >= {target:g}{'x' if unit == 'x' else ''}: {'ok' if value >= target else 'MISSED'}"
        out.append(line)
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    figures = config.stash.get(_FIGURES, {})
    report = config.stash.get(_REPORT, [])
    if not figures and not report:
        return
    terminalreporter.section("benchmark figures and ratios (one run, same machine)")
    if _LOAD in config.stash:
        terminalreporter.write_line(f"load average at start: {config.stash[_LOAD]:.2f} on {os.cpu_count()} CPUs")
    for line in report_lines(figures, report):
        terminalreporter.write_line(line)
