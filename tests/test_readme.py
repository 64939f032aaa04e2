"""The README's Python example works as written, against a real server and worker; its
environment table is the one `longtask.config` declares."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

from longtask.config import Computed, variables
from tests.conftest import Tenant
from tests.support import ROOT, Web, Worker


def _python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Python (httpx)", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README lost its Python example"
    return match.group(1)


async def test_readme_python_example(tenant_a: Tenant, web: Web, live_worker: Worker) -> None:
    env = {"LONGTASK_URL": web.url, "KEY": tenant_a.key, "PATH": "/usr/bin:/bin"}
    run = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _python_example()],
                                  env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "{'steps': 5}"
    ids = [int(line.split()[0]) for line in lines[:-1]]
    assert ids == list(range(1, len(ids) + 1))
    assert lines[-2].split()[1] == "status" and '"completed"' in lines[-2]


def _env_table() -> dict[str, tuple[str, str]]:
    """The README's environment table: variable -> (default, meaning), as written."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^\| variable \| default \| meaning \|\n\|---\|---\|---\|\n((?:\|.*\|\n)+)",
                      readme, re.M)
    assert match, "the README lost its environment table"
    rows: dict[str, tuple[str, str]] = {}
    for line in match.group(1).splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 3, f"not a row of three cells: {line}"
        name = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        assert name, f"one variable per row, in backquotes: {line}"
        assert name.group(1) not in rows, f"{name.group(1)} is listed twice"
        rows[name.group(1)] = (cells[1], cells[2])
    return rows


def test_readme_env_table_matches_the_declaration() -> None:
    """Every declared variable is in the table with its default and help, and nothing else is.
    To mend it: edit longtask.config, then `python -m longtask.config --markdown README.md`."""
    table, declared = _env_table(), variables()
    assert sorted(set(table) - set(declared)) == [], "listed in the README, declared nowhere"
    assert sorted(set(declared) - set(table)) == [], "declared, missing from the README"
    for name, var in declared.items():
        default, meaning = table[name]
        assert (default, meaning) == (var.shown_default(), var.help), name
        if var.shown or isinstance(var.default, Computed) or var.default in (None, ""):
            continue  # words, not a value: "embedded", "cores, at most 4", "" ...
        # the default as written, read back the way the variable is read, is the default used
        assert var.parse(default.split(" (")[0]) == var.default, name


def _deploy_section() -> str:
    readme = (ROOT / "README.md").read_text()
    assert "\n## Deploy\n" in readme, "the README lost its Deploy section"
    return readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]


def test_readme_deploy_section_shows_the_procfile_and_names_only_real_settings() -> None:
    """The Procfile the Deploy section shows is the one tests/deploy/test_procfile.py builds and
    runs under honcho; every variable it names is declared in longtask.config."""
    section = _deploy_section()
    shown = re.search(r"```Procfile\n(.*?)```", section, re.S)
    assert shown, "the Deploy section lost its Procfile"
    assert shown.group(1) == (ROOT / "Procfile").read_text()
    named = set(re.findall(r"\b(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT)\b", section))
    assert {"DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY"} <= named
    assert sorted(named - set(variables())) == []
