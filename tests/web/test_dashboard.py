"""The dashboard in a real browser: Debian's chromium, driven by playwright-core (tests/web/
dashboard.mjs), against the session's real web and worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from longtask.testing import pdfs
from tests.conftest import Tenant
from tests.support import ROOT, Web, Worker

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
SCRIPT_TIMEOUT = 240.0


def _browser_or_skip() -> None:
    missing = [what for what, ok in (
        (str(CHROMIUM), CHROMIUM.exists()),
        ("node", shutil.which("node") is not None),
        ("tests/web/node_modules (make browser-deps)",
         (HERE / "node_modules" / "playwright-core").is_dir()),
    ) if not ok]
    if not missing:
        return
    reason = f"the browser test needs {', '.join(missing)}: run `make browser-deps`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


async def _drive(web: Web, key: str, files: list[Path], query: str) -> dict[str, Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    env = {**os.environ, "DASHBOARD_URL": web.url, "DASHBOARD_KEY": key,
           "DASHBOARD_FILES": json.dumps([str(f) for f in files]), "DASHBOARD_QUERY": query,
           "DASHBOARD_ARTIFACTS": str(ARTIFACTS), "CHROMIUM": str(CHROMIUM)}
    proc = await asyncio.create_subprocess_exec(
        "node", str(HERE / "dashboard.mjs"), cwd=HERE, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SCRIPT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the browser script ran over {SCRIPT_TIMEOUT}s\n{web.tail()}")
    assert proc.returncode == 0, f"the browser script failed:\n{err.decode()}\n{web.tail()}"
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.timeout(300)
async def test_upload_follow_and_search_in_the_browser(web: Web, live_worker: Worker,
                                                       tenant_a: Tenant) -> None:
    _browser_or_skip()
    samples = pdfs.SAMPLES[:3]
    files = [ROOT / "samples" / f"{s.filename}.pdf" for s in samples]
    wanted = samples[1]

    seen = await _drive(web, tenant_a.key, files, wanted.phrase)

    assert seen["title"] == "longtask" and seen["heading"] == "longtask"
    assert seen["bad_key_error"].startswith("invalid_key:"), seen["bad_key_error"]
    assert seen["key_status"] == f"saved: {tenant_a.key[:6]}…"
    assert seen["rows_at_start"] == 3
    assert sorted(f["name"] for f in seen["files"]) == sorted(f.name for f in files)
    for row in seen["files"]:
        assert row["state"] == "completed" and row["percent"] == "100%", row
        assert row["bar"] == f"{row['name']}: 100%"
        # the counters the worker reported, shown as text
        assert re.search(r"pages (\d+)/\1", row["detail"]), row
        assert re.search(r"chunks (\d+)/\1", row["detail"]), row
    assert seen["overall"] == "100% · 3 of 3 done"
    assert seen["task_status"] == "completed"
    assert seen["cancel_disabled"] is True
    assert any(t.startswith("ingest") and "completed" in t for t in seen["task_list"])

    first = seen["first_result"]
    assert first["filename"] == f"{wanted.filename}.pdf", first
    pages = [int(n) for n in re.findall(r"\d+", first["pages"].split("·")[0])]
    assert pages and min(pages) <= wanted.phrase_page <= max(pages), first
    assert first["snippet"].strip(), first
    assert seen["error_visible"] is False
    assert seen["phone_overflow_px"] <= 0, "the page scrolls sideways on a phone"
    assert seen["console_errors"] == [] and seen["failed_requests"] == []
    for shot in ("dashboard.png", "dashboard-phone.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000
