"""The config reference, generated from the config models so it cannot drift from them.

``privfl config reference`` prints it; the documentation embeds it and the table of sections
that do not combine (``docs/config.md``, ``docs/combinations.md``), between markers that
:func:`sync_docs` rewrites (``make docs``; a test checks they are current).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from privfl.attacks.inversion.config import InversionConfig
from privfl.audit.config import AuditConfig
from privfl.compression.config import CompressionConfig
from privfl.config import (
    AttackConfig,
    Config,
    DataConfig,
    DefenseConfig,
    EvaluationConfig,
    FederationConfig,
)
from privfl.decentralized.config import DecentralizedConfig
from privfl.heterogeneity.config import HeterogeneityConfig
from privfl.incentives.config import IncentivesConfig
from privfl.models import (
    CharLSTMConfig,
    CNNConfig,
    LogisticRegressionConfig,
    MLPConfig,
    WordLSTMConfig,
)


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Literal:
        return " \\| ".join(repr(a).replace("'", '"') for a in get_args(ann))
    if origin in (types.UnionType, typing.Union):
        return " \\| ".join(_type_name(a) for a in get_args(ann) if a is not type(None)) + (
            " (optional)" if type(None) in get_args(ann) else ""
        )
    if origin is list:
        return f"list of {_type_name(get_args(ann)[0])}"
    if origin is typing.Annotated:
        base, *meta = get_args(ann)
        return _type_name(base) + _bounds(meta)
    return getattr(ann, "__name__", str(ann))


def _bounds(meta: list[Any]) -> str:
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for m in meta:
        for attr, op in ops.items():
            if getattr(m, attr, None) is not None:
                parts.append(f"{op} {getattr(m, attr)}")
    return f" ({', '.join(parts)})" if parts else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        ann = field.annotation
        typ = _type_name(ann) + _bounds(field.metadata)
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {typ} | {_default(field)} | {meaning} |")
    return rows


def _section_model(ann: Any) -> type[BaseModel]:
    """The model of a ``[defense.*]`` / ``[attack.*]`` sub-table (``X | None`` -> ``X``)."""
    for a in (ann, *get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    raise TypeError(f"not a config section: {ann!r}")


def config_reference() -> str:
    """Markdown tables of every config section and key, with types, defaults and meanings."""
    out = [
        "Top level:",
        "",
        *_table(
            Config,
            skip=(
                "data",
                "model",
                "federation",
                "evaluation",
                "defense",
                "attack",
                "audit",
                "compression",
                "incentives",
            ),
        ),
    ]
    sections: list[tuple[str, type[BaseModel]]] = [
        ("[data]", DataConfig),
        ('[model] name = "logreg"', LogisticRegressionConfig),
        ('[model] name = "mlp"', MLPConfig),
        ('[model] name = "cnn"', CNNConfig),
        ('[model] name = "char_lstm"', CharLSTMConfig),
        ('[model] name = "word_lstm"', WordLSTMConfig),
        ("[federation]", FederationConfig),
        ("[federation.heterogeneity]", HeterogeneityConfig),
        ("[federation.decentralized]", DecentralizedConfig),
        ("[compression]", CompressionConfig),
        ("[evaluation]", EvaluationConfig),
        ("[audit]", AuditConfig),
        ("[incentives]", IncentivesConfig),
        ("[attack.inversion]", InversionConfig),
    ]
    for holder, prefix in ((DefenseConfig, "defense"), (AttackConfig, "attack")):
        for key, field in holder.model_fields.items():
            sections.append((f"[{prefix}.{key}]", _section_model(field.annotation)))
    for title, model in sections:
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        if doc.startswith("``["):  # "``[data]``: which data set..." -> "which data set..."
            doc = doc.split(":", 1)[1].strip()
        doc = doc.replace("``", "`")
        out += ["", f"`{title}`: {doc}", "", *_table(model)]
    return "\n".join(out) + "\n"


#: The page of the documentation that holds each generated block, relative to the repository.
GENERATED_PAGES: dict[str, str] = {
    "config-reference": "docs/config.md",
    "combinations": "docs/combinations.md",
}


def generated_blocks() -> dict[str, str]:
    """The documentation's generated blocks by marker name: the config reference and the table
    of sections that do not combine (:func:`privfl.combinations.combination_table`)."""
    from privfl.combinations import combination_table

    return {
        "config-reference": config_reference(),
        "combinations": combination_table() + "\n",
    }


def replace_block(text: str, name: str, block: str) -> str:
    r"""``text`` with the lines between ``<!-- name:start -->`` and ``<!-- name:end -->``
    replaced by ``block``.

    >>> replace_block("a\n<!-- t:start -->\nold\n<!-- t:end -->\n", "t", "new\n")
    'a\n<!-- t:start -->\nnew\n<!-- t:end -->\n'
    """
    import re

    pattern = re.compile(rf"(<!-- {name}:start -->\n).*(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no {name} markers")
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), text)


def sync_docs(root: str = ".") -> bool:
    """Rewrite every generated block of the documentation pages under ``root``; True when one
    changed."""
    from pathlib import Path

    changed = False
    for name, block in generated_blocks().items():
        page = Path(root) / GENERATED_PAGES[name]
        text = page.read_text()
        try:
            new = replace_block(text, name, block)
        except ValueError:
            raise ValueError(f"{page} lacks the {name} markers") from None
        if new != text:
            page.write_text(new)
            changed = True
    return changed


__all__ = ["GENERATED_PAGES", "config_reference", "generated_blocks", "replace_block", "sync_docs"]
