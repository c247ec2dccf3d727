"""Helpers for reproducing a paper: the run's scale, real MNIST when the user has it, runs over
seeds, and the "paper vs ours" table that puts a paper's numbers beside ours.

The paper notebooks (``notebooks/*.py``) are written with these, and so can a researcher's own
reproduction. Three scales, chosen by the environment variable ``PRIVFL_SCALE``:

- ``small``: seconds, for the test suite (the claim is not checked at this size);
- ``default``: what the committed notebooks were executed at (minutes on a laptop CPU);
- ``paper``: the paper's own settings (rounds, clients, models), on the user's data.

Real MNIST is read from the folder named by ``PRIVFL_MNIST_DIR`` (the IDX files, raw or
gzip-compressed, as ``privfl data fetch mnist`` writes them); without it a notebook falls back to
the bundled 8x8 digits and says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from privfl.data.mnist import MNIST_FILES

#: The scales, smallest first.
SCALES: tuple[str, ...] = ("small", "default", "paper")
SCALE_ENV = "PRIVFL_SCALE"
MNIST_ENV = "PRIVFL_MNIST_DIR"

T = TypeVar("T")


def current_scale() -> str:
    """The scale named by ``PRIVFL_SCALE`` (``"default"`` when unset).

    >>> import os; os.environ["PRIVFL_SCALE"] = "small"; current_scale()
    'small'
    >>> del os.environ["PRIVFL_SCALE"]; current_scale()
    'default'
    """
    value = os.environ.get(SCALE_ENV, "default").strip().lower() or "default"
    if value not in SCALES:
        raise ValueError(f"{SCALE_ENV}={value!r}: expected one of {', '.join(SCALES)}")
    return value


def at_scale(*, small: T, default: T, paper: T) -> T:
    """The value for the current scale (:func:`current_scale`).

    >>> import os; os.environ["PRIVFL_SCALE"] = "paper"
    >>> at_scale(small=3, default=30, paper=1000)
    1000
    >>> del os.environ["PRIVFL_SCALE"]
    """
    return {"small": small, "default": default, "paper": paper}[current_scale()]


@dataclass(frozen=True)
class DataChoice:
    """The data a reproduction runs on.

    Attributes:
        section: the ``[data]`` section (a dict for :class:`privfl.Config`), without partition
            settings.
        name: ``"mnist"`` or ``"digits"``.
        note: one sentence for the reader: what was used and, for digits, that it stands in for
            MNIST.
    """

    section: dict[str, Any]
    name: str
    note: str

    @property
    def is_mnist(self) -> bool:
        """True when the run reads real MNIST."""
        return self.name == "mnist"


def mnist_dir() -> Path | None:
    """The MNIST folder named by ``PRIVFL_MNIST_DIR``, or None when the variable is unset.

    Raises:
        FileNotFoundError: the variable names a folder without MNIST's four IDX files (a typo
            must not silently turn an MNIST reproduction into a digits one).
    """
    value = os.environ.get(MNIST_ENV, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser()
    names = [name for pair in MNIST_FILES.values() for name in pair]
    missing = [
        n for n in names if not (folder / n).is_file() and not (folder / f"{n}.gz").is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{MNIST_ENV}={value}: missing {', '.join(missing)} (raw or .gz); "
            f"fetch them with: privfl data fetch mnist --dir {value}"
        )
    return folder


def mnist_or_digits(**section: Any) -> DataChoice:
    """MNIST from ``PRIVFL_MNIST_DIR`` when set, else the bundled 8x8 digits; ``section`` adds
    settings to the ``[data]`` section (partition, clients, ...).

    >>> import os; _ = os.environ.pop("PRIVFL_MNIST_DIR", None)
    >>> mnist_or_digits(clients=10).section
    {'name': 'digits', 'clients': 10}
    """
    folder = mnist_dir()
    if folder is None:
        note = (
            "Data: the bundled 8x8 digits (1,797 images) stand in for MNIST; set "
            f"{MNIST_ENV} to a folder of MNIST's IDX files to run on MNIST."
        )
        return DataChoice({"name": "digits", **section}, "digits", note)
    note = f"Data: MNIST's IDX files from {folder}."
    return DataChoice({"name": "mnist", "dir": str(folder), **section}, "mnist", note)


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (``ddof = 1``) of a measurement over seeds.

    >>> m = MeanStd.of([0.90, 0.92, 0.94])
    >>> round(m.mean, 6), round(m.std, 6), m.n
    (0.92, 0.02, 3)
    >>> m.format(".2f")
    '0.92 ± 0.02'
    """

    mean: float
    std: float
    n: int
    values: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, values: Iterable[float]) -> MeanStd:
        """The mean and sample std of ``values`` (std 0 for a single value); NaNs refused."""
        xs = tuple(float(v) for v in values)
        if not xs:
            raise ValueError("MeanStd.of needs at least one value")
        if any(math.isnan(x) for x in xs):
            raise ValueError(f"MeanStd.of got NaN among {xs}")
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
        return cls(mean, math.sqrt(var), len(xs), xs)

    def format(self, spec: str = ".3g") -> str:
        """``"mean ± std"`` with ``spec`` applied to both."""
        return f"{self.mean:{spec}} ± {self.std:{spec}}"

    def __str__(self) -> str:
        return self.format()


def over_seeds(run: Callable[[int], T], seeds: Sequence[int]) -> list[T]:
    """``[run(seed) for seed in seeds]``: one result a seed, seeds distinct."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {list(seeds)}")
    return [run(seed) for seed in seeds]


@dataclass
class PaperVsOurs:
    """The table that puts a paper's numbers beside ours; Jupyter shows it as Markdown.

    Each row: what is measured, the paper's value and where it is printed (table or figure),
    ours (a :class:`MeanStd` over seeds, or text), and a plain sentence on the difference.

    >>> t = PaperVsOurs("Our setting: digits, MLP, 3 seeds.")
    >>> t.add("accuracy", paper="99.2%", source="Table 2", ours=MeanStd.of([0.9, 0.92]),
    ...       note="smaller images")
    >>> print(t.to_markdown().splitlines()[4])
    | accuracy | 99.2% | Table 2 | 0.91 ± 0.0141 (2 seeds) | smaller images |
    """

    setup: str
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    spec: str = ".3g"

    def add(
        self, quantity: str, *, paper: str, source: str, ours: MeanStd | str, note: str
    ) -> None:
        """Add a row; ``ours`` as a :class:`MeanStd` prints ``mean ± std (n seeds)``."""
        if isinstance(ours, MeanStd):
            ours = f"{ours.format(self.spec)} ({ours.n} seeds)"
        self.rows.append((quantity, paper, source, ours, note))

    def to_markdown(self) -> str:
        """The table in Markdown, with the setup sentence below it."""
        head = "| quantity | paper | paper's source | ours | difference and likely cause |"
        lines = ["**Paper vs ours**", "", head, "| --- | --- | --- | --- | --- |"]
        for row in self.rows:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return "\n".join([*lines, "", self.setup])

    def _repr_markdown_(self) -> str:
        return self.to_markdown()
