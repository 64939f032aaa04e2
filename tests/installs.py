"""Fresh venvs that hold only what an install asks for, and commands run from them as a user
runs them: outside the checkout, with none of the test session's settings or PYTHONPATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT


class Venv:
    """A fresh venv where the session's pip (`--python`) ran `pip install *requirements` in
    `cwd`, and nothing else: no pip of its own. pip's cache and the configured indexes serve the
    packages."""

    def __init__(self, path: Path, *requirements: str, cwd: Path | None = None) -> None:
        self.path = path
        started = time.monotonic()
        run([sys.executable, "-m", "venv", "--without-pip", str(path)])
        run([sys.executable, "-m", "pip", "--python", str(self.python), "install", "--quiet",
             "--disable-pip-version-check", *requirements], timeout=540, cwd=cwd)
        self.seconds = time.monotonic() - started
        print(f"\nvenv {path.name} ({' '.join(requirements)}): "
              f"{self.seconds:.1f} s, site-packages {self.size / 1e6:.1f} MB")

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def site_packages(self) -> Path:
        return next((self.path / "lib").glob("python3*/site-packages"))

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.site_packages.rglob("*")
                   if p.is_file() and not p.is_symlink())

    def distributions(self) -> dict[str, str]:
        """Installed distributions: normalised name -> version."""
        found = {}
        for info in self.site_packages.glob("*.dist-info"):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            found[normalise(name)] = version
        return found

    def run(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command of this venv (`python`, `longtask`, ...) as a user runs it."""
        command = [str(self.bin / args[0]), *args[1:]]
        return subprocess.run(command, env=env or user_env(), cwd=cwd or self.path,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def user_env(**extra: str) -> dict[str, str]:
    """The environment less what ties a process to the checkout or to the test session."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LONGTASK_", "PYTHON", "VIRTUAL_ENV"))
           and k not in ("DATABASE_URL", "REDIS_URL", "PORT", "WEB_CONCURRENCY")}
    return {**env, **extra}


def pins() -> dict[str, str]:
    """Every `name==version` of pyproject.toml (any extra): normalised name -> version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in [*project["dependencies"],
                        *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        name, sep, version = requirement.partition("==")
        if sep:
            found[normalise(name.partition("[")[0])] = version
    return found


def pin(name: str) -> str:
    """`name==version` as pyproject.toml pins it."""
    return f"{name}=={pins()[normalise(name)]}"


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temp dir that others may read (the pgserver system user must reach a demo's data);
    kept after a CI run, for its logs."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        if os.environ.get("CI") != "true":
            shutil.rmtree(root, ignore_errors=True)


def run(args: list[str], timeout: float = 120, cwd: Path | None = None) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=user_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
