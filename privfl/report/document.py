"""A small report document (headings, text, tables, images, warnings) with two renderings:
Markdown that references its PNG files, and one self-contained HTML page with the PNGs
embedded as base64 data URIs (it can be mailed or archived alone)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    """A section heading (level 2 by default)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; **bold** and `code` are rendered in both outputs."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table: a header row and body rows of strings."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG on disk; ``path`` relative to the report's folder is what Markdown links to."""

    path: Path
    alt: str


@dataclass(frozen=True)
class Alert:
    """A warning box (Markdown: a block quote)."""

    text: str


Block = Heading | Paragraph | Bullets | Table | Image | Alert


@dataclass
class Document:
    """An ordered list of blocks under a title."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, base: Path) -> str:
    """Markdown; images are linked relative to ``base`` (the folder of report.md)."""
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            rel = Path(b.path).resolve().relative_to(base.resolve())
            out += [f"![{b.alt}]({rel.as_posix()})", ""]
        elif isinstance(b, Alert):
            out += [f"> **Warning:** {b.text}", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 960px;
       margin: 2em auto; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .93em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; margin: .4em 0 1em; }
.warning { background: #fff4e5; border-left: 5px solid #f08c00; padding: .5em .8em;
           margin: .6em 0; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _inline(text: str) -> str:
    """HTML-escape, then render the Markdown the report uses inline: **bold** and `code`."""
    s = html.escape(text)
    parts = s.split("**")
    s = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = s.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(doc: Document) -> str:
    """One self-contained HTML page: CSS inline, every PNG embedded as a data URI."""
    body = [f"<h1>{_inline(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(b, Alert):
            body.append(f'<div class="warning"><strong>Warning:</strong> {_inline(b.text)}</div>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


__all__ = [
    "Block",
    "Bullets",
    "Document",
    "Heading",
    "Image",
    "Paragraph",
    "Table",
    "Alert",
    "to_html",
    "to_markdown",
]
