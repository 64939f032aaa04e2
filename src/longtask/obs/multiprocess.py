"""prometheus_client's multiprocess mode for the web processes of one machine: the directory they
share (`PROMETHEUS_MULTIPROC_DIR`), made ready before uvicorn starts them, read at each scrape.

prometheus_client reads the variable once, when it is imported: a process started with it writes
every metric value to files of its own pid there, and `MultiProcessCollector` adds up all the
files. Counters of a process that has ended still count (as they should: they were answered);
its "live" gauges (`multiprocess_mode="live..."`) must be forgotten (`mark_process_dead`).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, MutableMapping

from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(environ: MutableMapping[str, str] | None = None) -> str:
    """Make the web processes about to be started add up their metrics; returns the directory.

    Call it once in the process that starts them (`longtask web`), before uvicorn does, with the
    environment they will inherit (`os.environ` by default). If `PROMETHEUS_MULTIPROC_DIR` is
    unset it makes a private temporary directory, removed when this process exits, and sets the
    variable; if it is set it empties it of the last run's files (`*.db`), creating it if need
    be, as counters must start from zero with the server. Never call it from a web process
    itself: each would wipe what the others have counted. Leave the variable out of a worker's
    environment: a worker publishes its metrics through Redis.
    """
    env = os.environ if environ is None else environ
    path = env.get(MULTIPROC_DIR)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="longtask-metrics-")
        atexit.register(shutil.rmtree, path, True)
        env[MULTIPROC_DIR] = path
    return path


def directory() -> str | None:
    """The shared directory if this process is in multiprocess mode. The mode prometheus_client
    chose when it was imported is what counts: a process that set the variable later (uvicorn
    with one worker runs the app in the process that called `prepare_multiprocess`) keeps its
    values in memory, and must serve them from there."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROC_DIR)


class SharedCollector(Collector):
    """The families named `names`, added up over the files of every process in `path`; only
    those, should a worker on the same machine have been given the directory too."""

    def __init__(self, path: str, names: set[str]) -> None:
        self._all = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self._names = names

    def collect(self) -> Iterator[Metric]:
        merged = self._all.collect()  # type: ignore[no-untyped-call]
        return (family for family in merged if family.name in self._names)


def mark_dead(pid: int, path: str) -> None:
    """Process `pid` is stopping or gone: its live gauges stop counting."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def forget_dead_processes(path: str) -> None:
    """`mark_dead` for the processes that died without saying so (killed; uvicorn starts
    another). They all ran on this machine, so their pids tell."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(file)[:-3].rsplit("_", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            mark_dead(int(pid), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
