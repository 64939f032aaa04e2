"""Run every benchmark and write bench/RESULTS.md.

    .venv/bin/python -m bench                 # all, at the issue's sizes (make bench)
    .venv/bin/python -m bench submit latency  # some of them; the others' last figures are kept
    .venv/bin/python -m bench render          # only rewrite RESULTS.md (after editing ANALYSIS.md)

Each script runs in its own process (its own services on free ports) and hands its figures back
as JSON, kept in bench/results/NAME.json; a script that fails is recorded as failed, with the end
of its output, and the rest run. RESULTS.md is made from every script's last run.
The analysis in bench/ANALYSIS.md (written by hand, from profiles) is appended to the results.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench._report import Figure, cells
from longtask import config

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCRIPTS = ("submit", "overhead", "latency", "fanout", "llm", "ingest", "relay", "generate",
           "scrape", "fairness", "retrieval")
PACKAGES = ("starlette", "uvicorn", "arq", "redis", "asyncpg", "sse-starlette", "httpx",
            "pymupdf", "sentence-transformers", "torch", "pgserver")


def main() -> None:
    names = sys.argv[1:] or list(SCRIPTS)
    if names == ["render"]:
        names = []
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; pick from {SCRIPTS}")
    RESULTS.mkdir(exist_ok=True)
    if names:
        started = time.monotonic()
        machine = machine_info()
        for name in names:
            (RESULTS / f"{name}.json").write_text(json.dumps(run_one(name), indent=1))
        machine["load average at the end"] = " ".join(map(str, os.getloadavg()))
        machine["time of the last invocation"] = f"{(time.monotonic() - started) / 60:.1f} min"
        (RESULTS / "machine.json").write_text(json.dumps(machine, indent=1))
    machine = json.loads((RESULTS / "machine.json").read_text())
    sections = [json.loads((RESULTS / f"{n}.json").read_text()) for n in SCRIPTS
                if (RESULTS / f"{n}.json").exists()]
    (HERE / "RESULTS.md").write_text(render(machine, sections))
    print(f"\nwrote {HERE / 'RESULTS.md'}")


def run_one(name: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    print(f"\n=== bench.{name} ===", flush=True)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--json", path],
                          cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    print(proc.stdout, flush=True)
    seconds = time.monotonic() - started
    ran = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        result = json.loads(Path(path).read_text()) if proc.returncode == 0 else {}
    except (OSError, ValueError):
        result = {}
    Path(path).unlink(missing_ok=True)
    if not result:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        return {"title": f"bench.{name}", "failed": f"exit {proc.returncode}", "tail": tail,
                "seconds": seconds, "ran": ran}
    return {**result, "seconds": seconds, "ran": ran}


def machine_info() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE.parent).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "nproc": str(os.cpu_count()),
        "memory": f"{mem / 2**20:.1f} GiB",
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "Redis": redis.split()[2] if redis else "?",
        "PostgreSQL": "16 (pgserver, fsync " +
                      ("off" if config.read("LONGTASK_PG_FAST") else "on") + ")",
        "packages": ", ".join(versions),
        "load average at the start": " ".join(map(str, os.getloadavg())),
    }


def render(machine: dict[str, str], sections: list[dict[str, Any]]) -> str:
    lines = ["# longtask benchmarks (issues 7 and 8)", "",
             "Written by `make bench` (`.venv/bin/python -m bench`); do not edit by hand, edit "
             "`bench/ANALYSIS.md`.", "",
             "Each figure is set against a baseline measured in the same invocation on the same "
             "Redis/PostgreSQL; the ratio is figure / baseline. On a machine shared with other work "
             "absolute numbers are noisy: compare the ratios.", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines.append("")
    missed: list[str] = []
    for section in sections:
        lines += [f"## {section['title']}", ""]
        if "failed" in section:
            lines += [f"**Did not finish** ({section['failed']}):", "", "```", section["tail"],
                      "```", ""]
            missed.append(f"{section['title']}: did not finish")
            continue
        lines += [f"`{section['command']}` ({section['seconds']:.0f} s, {section['ran']})", "",
                  "| figure | value | baseline | ratio | target | met |",
                  "|---|---|---|---|---|---|"]
        for raw in section["figures"]:
            figure = Figure(**raw)
            lines.append("| " + " | ".join(cells(figure)) + " |")
            if figure.met is False:
                missed.append(f"{section['title']}: {figure.name} ({cells(figure)[1]}; "
                              f"target {figure.target})")
        lines.append("")
        lines += [f"- {note}" for note in section["notes"]]
        lines.append("")
    lines += ["## Targets missed", ""]
    lines += [f"- {m}" for m in missed] or ["- none"]
    lines.append("")
    analysis = HERE / "ANALYSIS.md"
    if analysis.exists():
        lines += [analysis.read_text()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
