"""The README's examples run: each ```python block after an ``<!-- example: … -->`` mark.

``exec`` blocks run here as they are (``REDIS_URL`` names the suite's
private redis-server); ``file=PATH`` blocks must appear verbatim in that
file, which runs in the suite itself (so README and code cannot drift).
"""

from __future__ import annotations

import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"<!-- example: (?P<how>[^>]+?) -->\n```python\n(?P<code>.*?)```", re.S)


def _examples() -> list[Any]:
    text = (ROOT / "README.md").read_text()
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code"))
        # padded so that a failing line is reported with its README line number
        out.append(pytest.param(m.group("how").strip(), "\n" * line + m.group("code"), id=f"README.md:{line}"))
    return out


EXAMPLES = _examples()


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("how, code", EXAMPLES)
def test_readme_example(how: str, code: str, backstage_redis: Any) -> None:
    if how == "exec":
        # a real module, so that dataclasses and type hints resolve as in a user's file
        mod = types.ModuleType("readme_example")
        mod.REDIS_URL = backstage_redis.url  # type: ignore[attr-defined]
        sys.modules[mod.__name__] = mod
        try:
            exec(compile(code, str(ROOT / "README.md"), "exec", dont_inherit=True), mod.__dict__)
        finally:
            del sys.modules[mod.__name__]
    elif how.startswith("file="):
        source = (ROOT / how[len("file="):]).read_text()
        assert textwrap.dedent(code).strip() in source, f"README block is not in {how[5:]} any more"
    else:
        raise AssertionError(f"unknown example mark {how!r}")
