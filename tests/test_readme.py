"""The README stays true: one configuration row per setting, and CI runs the test command it gives."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from trackgate import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_has_one_configuration_row() -> None:
    rows = re.findall(r"^\| `(TRACKGATE_[A-Z_]+)` \|", README, flags=re.MULTILINE)
    fields = ["TRACKGATE_" + field.name.upper() for field in dataclasses.fields(Settings)]
    assert sorted(rows) == sorted(fields)


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"```sh\n(.+?)\n```", README)
    test_command = next(block for block in blocks if "pytest" in block)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and line[0] != "#"]
    assert ci_lines[-1] == test_command
