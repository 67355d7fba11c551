"""docs/operations.md lists every setting, and only real ones."""

import re
from pathlib import Path

import pytest

from streams.settings import PREFIX, Settings

pytestmark = pytest.mark.unit

DOC = Path(__file__).parents[2] / "docs" / "operations.md"


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    documented = set(re.findall(r"`(SEMS_[A-Z0-9_]+)`", DOC.read_text()))
    real = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert real - documented == set(), "add these to docs/operations.md"
    assert documented - real == set(), "docs/operations.md names settings that do not exist"
