"""README.md embeds the generated config reference, and its Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from privfl.reference import generated_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", sorted(generated_blocks()))
def test_readme_generated_blocks_are_current(name):
    text = README.read_text()
    m = re.search(rf"<!-- {name}:start -->\n(.*)<!-- {name}:end -->", text, re.S)
    assert m, f"README lacks the {name} markers"
    assert m.group(1) == generated_blocks()[name], "regenerate with `make docs`"


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = README.read_text().split("```python", 1)[1].split("```", 1)[0]
    code = code.replace('"rounds": 20', '"rounds": 2')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert (
        len(result.metrics) == 2
        and (tmp_path / "runs" / "digits-fedavg" / "metrics.jsonl").exists()
    )
