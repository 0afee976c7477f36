"""The codebase stays ruff clean and mypy --strict clean (checked on an installed copy, because the
source folders are not named like the package they become)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_ruff_finds_nothing() -> None:
    folders = [name for name in ("middleware", "adapters", "tests", "bench", "samples") if (ROOT / name).is_dir()]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *folders], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_on_the_installed_package(tmp_path: Path) -> None:
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(tmp_path / "site"), str(ROOT)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "-p", "trackgate"],
        cwd=tmp_path / "site", capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
