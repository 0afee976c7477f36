"""The wheel a user installs: built from the source tree, installed into a fresh virtual environment, it
holds only the ``trackgate`` package (with py.typed and the compiled inner loop) and imports from
site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=150,
    )
    (built,) = out.glob("trackgate-*.whl")
    return built


def test_wheel_holds_only_the_trackgate_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "trackgate/py.typed" in names
    assert "trackgate/adapters/__init__.py" in names
    strays = [n for n in names if not n.startswith(("trackgate/", "trackgate-"))]
    assert strays == []


def test_installed_wheel_imports_from_site_packages(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        timeout=90,
    )
    probe = (
        "import importlib.util, trackgate, trackgate.adapters, trackgate._speedups, trackgate._asgi_send\n"
        "print(trackgate.__file__)\n"
        "print(trackgate.adapters.__file__)\n"
        "print(importlib.util.find_spec('middleware'))\n"
        "print(importlib.util.find_spec('adapters'))\n"
        "print(trackgate._speedups.__file__)\n"
        "print(trackgate._asgi_send.__file__)\n"
    )
    # Run from the venv folder so that the source tree is not on sys.path by accident.
    result = subprocess.run(
        [str(python), "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    package, adapters, middleware, top_adapters, compiled, shell = result.stdout.splitlines()
    site = str(venv / "lib")
    assert package.startswith(site) and "site-packages" in package
    assert adapters.startswith(site)
    assert compiled.startswith(site)  # the rewriter's compiled inner loop, built with the wheel
    assert shell.startswith(site)  # and the ASGI shell's compiled start and send
    assert str(ROOT) not in package + adapters
    assert middleware == "None"
    assert top_adapters == "None"
