"""The documentation: its generated pages are current, every page of the site's navigation
exists, README.md starts with the two commands and its Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from privfl.reference import GENERATED_PAGES, generated_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HISTORY = re.compile(r"issue [0-9]+|acceptance check|\.\./shared|\(before: ")


@pytest.mark.parametrize("name", sorted(generated_blocks()))
def test_generated_blocks_are_current(name):
    page = ROOT / GENERATED_PAGES[name]
    m = re.search(rf"<!-- {name}:start -->\n(.*)<!-- {name}:end -->", page.read_text(), re.S)
    assert m, f"{page} lacks the {name} markers"
    assert m.group(1) == generated_blocks()[name], "regenerate with `make docs`"


def _nav_pages() -> list[str]:
    # mkdocs.yml's nav entries are "- Title: page.md"; no YAML parser needed for that shape.
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:", 1)[1]
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M)


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    pages = _nav_pages()
    assert len(pages) >= 8
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml's nav names missing pages: {missing}"
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk <= set(pages), f"pages outside the nav: {sorted(on_disk - set(pages))}"


def test_docs_links_between_pages_resolve():
    for page in [README, *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_docs_state_facts_not_history():
    for page in [README, *(ROOT / "docs").rglob("*.md")]:
        m = HISTORY.search(page.read_text())
        assert not m, f"{page.name}: {m.group(0)!r}"


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 250


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = README.read_text().split("```python", 1)[1].split("```", 1)[0]
    assert '"rounds": 20' in code
    code = code.replace('"rounds": 20', '"rounds": 2')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert (
        len(result.metrics) == 2
        and (tmp_path / "runs" / "digits-fedavg" / "metrics.jsonl").exists()
    )
