"""``lint-imports`` for privfl's mapped subpackages: ``python tools/lint_imports.py [ARGS]``.

privfl ships three import packages from one distribution: ``privfl.attacks`` and
``privfl.defenses`` live in the folders ``attacks/`` and ``defenses/`` (setuptools
``package-dir``), outside ``privfl/``. grimp, which builds import-linter's graph, scans one
folder per root package and refuses a root package that is not top-level
(``NotATopLevelModule``), and plain ``lint-imports`` offers no hook that runs before the graph
is built. So this script lets grimp take those two subpackages as root packages of their own
(their folders are scanned under their dotted names), then runs import-linter's own command
with the contracts of ``[tool.importlinter]`` in pyproject.toml. Nothing else changes.
"""

from __future__ import annotations

import sys

from grimp.adaptors import packagefinder
from importlinter.cli import lint_imports_command

#: Subpackages mapped to folders outside ``privfl/`` (pyproject.toml, ``package-dir``).
MAPPED = frozenset({"privfl.attacks", "privfl.defenses"})

_has_parent = packagefinder.ImportLibPackageFinder._has_a_non_namespace_parent


def _mapped_is_top_level(self, spec) -> bool:  # type: ignore[no-untyped-def]
    return False if spec.name in MAPPED else _has_parent(self, spec)


def main() -> None:
    """Patch grimp's top-level check for :data:`MAPPED`, then run ``lint-imports``."""
    finder = packagefinder.ImportLibPackageFinder
    finder._has_a_non_namespace_parent = _mapped_is_top_level  # type: ignore[method-assign]
    sys.exit(lint_imports_command())


if __name__ == "__main__":
    main()
