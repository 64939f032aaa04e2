"""A benchmark's figures: a rich table on stdout, and JSON for `python -m bench` to collect.

Each figure may carry the same-run baseline it is compared with, its ratio to it, and the issue's
target with whether it is met (None: no target, or not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None  # the same-run baseline, in the same unit
    baseline_name: str = ""
    target: str = ""  # the target, in words
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline or math.isnan(self.baseline):
            return None
        return self.value / self.baseline


@dataclass
class Report:
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, **extra: Any) -> Figure:
        figure = Figure(name, value, unit, **extra)
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)

    def show(self) -> None:
        table = Table(title=self.title)
        for column in ("figure", "value", "baseline", "ratio", "target", "met"):
            table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
        for f in self.figures:
            table.add_row(*cells(f))
        console = Console(width=160)
        console.print(table)
        for text in self.notes:
            console.print(f"  note: {text}")

    def save(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps(
                {"title": self.title, "command": self.command, "notes": self.notes,
                 "figures": [asdict(f) for f in self.figures]}, indent=1))


def cells(f: Figure) -> list[str]:
    """figure, value, baseline, ratio, target, met: as text, for the table and RESULTS.md."""
    baseline = "" if f.baseline is None else f"{number(f.baseline)} {f.unit} ({f.baseline_name})"
    ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
    met = {True: "yes", False: "**no**", None: ""}[f.met]
    return [f.name, f"{number(f.value)} {f.unit}", baseline, ratio, f.target, met]


def number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cli(module: str, title: str, doc: str | None, run: Callable[..., Awaitable[None]],
        **sizes: float | str) -> None:
    """A bench script's command line: `--NAME` for each size (its default the issue's size)
    and `--json PATH`; runs `run(report, **sizes)`, prints the table, saves the figures."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in sizes.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--json", help="also write the figures here (for python -m bench)")
    args = vars(p.parse_args())
    path = args.pop("json")
    command = " ".join([f"python -m {module}", *(f"--{k.replace('_', '-')} {v}"
                                                  for k, v in args.items())])
    report = Report(title, command)
    asyncio.run(run(report, **args))
    report.show()
    report.save(path)
