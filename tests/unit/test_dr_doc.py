"""The Python examples in docs/demand-response.md run."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOC = Path(__file__).parents[2] / "docs" / "demand-response.md"


def test_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert blocks, "docs/demand-response.md has no Python example"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
