"""The README's Python example works as written, against a real server and worker."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

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
