"""One suite cell: run a config through the public API and reduce it to a row of figures.

This is what a worker process executes. It never raises: a config the stages reject is
``invalid``, another :class:`~privfl.errors.PrivflError` is ``failed`` (both deterministic, so
cached), and anything else is ``error`` (a bug; not cached, so a fixed bug reruns the cell).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import traceback
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Any

from privfl.config import Config
from privfl.errors import ConfigError, PrivflError
from privfl.federation import RunResult
from privfl.runfolder import RunFile


class CellStatus(StrEnum):
    """How a cell ended."""

    OK = "ok"
    INVALID = "invalid"  # the config (or the stages built from it) rejects the combination
    FAILED = "failed"  # a PrivflError while running (e.g. a HE headroom error)
    ERROR = "error"  # an unexpected exception: a bug


class Metric(StrEnum):
    """The figures a cell reports (columns of ``results.csv``)."""

    ACCURACY = "accuracy"  # final test accuracy
    ACCURACY_DROP = "accuracy_drop"  # clean twin's, else the baseline attack's, minus this
    ATTACK_SUCCESS = "attack_success"  # backdoor attack success rate (last round)
    PSNR = "psnr"  # median over the inversion records with a reconstruction
    SSIM = "ssim"
    LABEL_ACCURACY = "label_accuracy"
    PERPLEXITY = "perplexity"  # text: final test perplexity, exp(mean cross-entropy)
    TOKEN_RECALL = "token_recall"  # text inversion: median share of a client's tokens recovered
    MEMBERSHIP_AUC = "membership_auc"  # the best membership record's AUC
    MEMBERSHIP_TPR = "membership_tpr_at_fpr_0.001"  # its TPR at 0.1% FPR
    EPSILON = "epsilon"  # the ledger's headline epsilon (worst party)
    BYTES_UP = "bytes_up"  # client -> server bytes, summed over rounds
    BYTES_OVERHEAD = "bytes_overhead"  # bytes_up / the baseline defense's
    SECONDS = "seconds"  # wall-clock seconds of the rounds (RunResult.timings), no set-up
    SECONDS_OVERHEAD = "seconds_overhead"  # seconds / the baseline defense's
    # Fairness across clients at the last federated evaluation (evaluation.federated_every).
    FED_ACCURACY_MEAN = "fed_accuracy_mean"  # mean per-client accuracy
    FED_ACCURACY_STD = "fed_accuracy_std"  # their std (ddof 0)
    FED_ACCURACY_WORST10 = "fed_accuracy_worst10"  # mean of the worst 10% of clients
    FED_ACCURACY_JAIN = "fed_accuracy_jain"  # Jain's index (Jain et al. 1984)


#: Figures that differ between two runs of the same config (wall-clock time).
NONDETERMINISTIC = frozenset({Metric.SECONDS, Metric.SECONDS_OVERHEAD})


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


def run_cell(config: Config, runs_dir: str | Path | None) -> dict[str, Any]:
    """Run ``config`` (its run folder ``runs_dir/<name>``, replaced if a killed suite left one;
    None: no folder) and return ``{"status", "reason", "metrics", "run_dir", "log"}``.

    Warnings logged or raised during the run are returned in ``log`` instead of printed, so
    parallel cells do not write over the suite's progress bar.
    """
    from privfl.driver import run

    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    out: dict[str, Any] = {"status": CellStatus.OK.value, "reason": "", "metrics": {}}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(config, out=runs_dir, overwrite=True, progress=False)
        handler.lines += [f"warning: {w.message}" for w in caught]
        out["metrics"] = summarize(result)
        out["run_dir"] = None if result.run_dir is None else str(result.run_dir)
    except ConfigError as e:
        out.update(status=CellStatus.INVALID.value, reason=str(e))
    except PrivflError as e:
        out.update(status=CellStatus.FAILED.value, reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug: reported with its traceback, never cached
        out.update(
            status=CellStatus.ERROR.value,
            reason=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
        )
    finally:
        root.removeHandler(handler)
    out["log"] = handler.lines
    return out


def summarize(result: RunResult) -> dict[str, float | None]:
    """The cell's figures (:class:`Metric`) from a finished run: the last round's accuracy and
    attack figures, the median inversion scores, the ledger's epsilon, total bytes and time,
    and the fairness figures of the last federated evaluation."""
    metrics = result.metrics
    last = metrics[-1] if metrics else {}
    ok = [r for r in result.attacks if r.get("status", "ok") == "ok"]
    out: dict[str, float | None] = {
        Metric.ACCURACY: last.get("test_accuracy"),
        Metric.ACCURACY_DROP: last.get("accuracy_drop"),
        Metric.ATTACK_SUCCESS: last.get("attack_success_rate"),
        Metric.PSNR: _median(r.get("psnr") for r in ok),
        Metric.SSIM: _median(r.get("ssim") for r in ok),
        Metric.LABEL_ACCURACY: _median(r.get("label_accuracy") for r in ok),
        Metric.PERPLEXITY: last.get("test_perplexity"),
        Metric.TOKEN_RECALL: _median(r.get("token_recall") for r in ok),
        **_membership(ok),
        Metric.EPSILON: _epsilon(result),
        Metric.BYTES_UP: float(sum(m.get("bytes_up", 0) for m in metrics)),
        Metric.SECONDS: float(sum(t["seconds"] for t in result.timings)),
        **_fairness(metrics),
    }
    return {k.value: (None if v is None else float(v)) for k, v in out.items()}


_FAIRNESS = (
    Metric.FED_ACCURACY_MEAN,
    Metric.FED_ACCURACY_STD,
    Metric.FED_ACCURACY_WORST10,
    Metric.FED_ACCURACY_JAIN,
)


def _fairness(metrics: list[dict[str, Any]]) -> dict[Metric, float | None]:
    """The fairness figures of the last round with a federated evaluation (None without:
    ``evaluation.federated_every = 0``)."""
    last = next((m for m in reversed(metrics) if Metric.FED_ACCURACY_MEAN.value in m), {})
    return {k: last.get(k.value) for k in _FAIRNESS}


def _membership(records: list[dict[str, Any]]) -> dict[Metric, float | None]:
    """AUC and TPR at 0.1% FPR of the membership record with the highest AUC (None without)."""
    found = [r for r in records if "auc" in r and "tpr_at_fpr_0.001" in r]
    if not found:
        return {Metric.MEMBERSHIP_AUC: None, Metric.MEMBERSHIP_TPR: None}
    best = max(found, key=lambda r: r["auc"])
    return {Metric.MEMBERSHIP_AUC: best["auc"], Metric.MEMBERSHIP_TPR: best["tpr_at_fpr_0.001"]}


def _median(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(present) if present else None


def _epsilon(result: RunResult) -> float | None:
    """The run's headline epsilon: the worst party's under the configured accountant (what
    ``ledger.json`` reports), without the other accountants' figures ``ledger.json`` adds
    (PRV alone takes seconds per history)."""
    ledger = result.ledger
    if not ledger.events:
        return None
    if result.run_dir is not None:  # finish() already wrote it: no second accountant call
        eps = json.loads((Path(result.run_dir) / RunFile.LEDGER.value).read_text())["epsilon"]
        return None if eps is None else float(eps)  # "inf" -> inf
    try:
        return max(ledger.epsilons().values())
    except PrivflError:  # e.g. GDP's root search failing; ledger.json says the same
        return None


def init_worker(threads: int = 1) -> None:
    """Process-pool initializer: ``threads`` torch threads per worker (cells run side by side
    on few cores; more threads per process would only contend)."""
    import torch

    from privfl.config import Config
    from privfl.driver import run

    torch.set_num_threads(threads)
    # One tiny run first, so that the first cell's seconds do not carry the process's
    # one-off costs (lazy imports, first kernels).
    run(
        Config(name="warmup", federation={"rounds": 1, "clients_per_round": 2}),
        out=None,
        progress=False,
    )


__all__ = ["CellStatus", "Metric", "NONDETERMINISTIC", "init_worker", "run_cell", "summarize"]
