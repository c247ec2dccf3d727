"""Error feedback: residual + sent = input + old residual; residuals survive resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import small_config

import privfl
from privfl.compression import CompressionConfig, CompressUpdates
from privfl.ledger import Ledger
from privfl.runfolder import RunFile, RunFolder
from privfl.stages import RoundContext
from privfl.update import ParamSpec, UpdateBatch


def _ctx(d, ids, r):
    spec = ParamSpec(("w",), ((d,),), (0,), d)
    return RoundContext(r, 0, torch.zeros(d), spec, 10, np.asarray(ids), Ledger())


@pytest.mark.parametrize(
    "cfg,exact",
    [
        ({"method": "topk", "ratio": 0.05}, True),
        ({"method": "randk", "ratio": 0.05}, True),
        ({"method": "randk", "ratio": 0.05, "shared_seed": True}, True),
        ({"method": "qsgd", "levels": 4}, False),
        ({"method": "sign"}, False),
    ],
)
def test_residual_plus_sent_is_input_plus_old_residual(cfg, exact):
    d = 500
    t = CompressUpdates(CompressionConfig(**cfg, error_feedback=True), d)
    rng = np.random.default_rng(0)
    for r in range(1, 6):
        ids = np.sort(rng.choice(10, 4, replace=False)).astype(np.int64)
        x = torch.from_numpy(rng.normal(size=(4, d)).astype(np.float32))
        old = torch.stack([t.feedback.residuals.get(int(c), torch.zeros(d)) for c in ids])
        out = t.apply(UpdateBatch(ids, x, np.ones(4)), _ctx(d, ids, r))
        new = torch.stack([t.feedback.residuals[int(c)] for c in ids])
        lhs, rhs = new + out.deltas, x + old
        if exact:
            assert torch.equal(lhs, rhs)
        else:  # one float32 subtraction's rounding
            torch.testing.assert_close(lhs, rhs, rtol=0, atol=2e-6 * float(rhs.abs().max()))
        assert torch.equal(out.encoded.decode(), out.deltas)
        if r > 1 and cfg["method"] != "sign":
            assert new.abs().sum() > 0


def test_error_feedback_resume_is_exact(tmp_path):
    cfg = small_config(
        name="ef", federation={"rounds": 4}, compression={"method": "topk", "ratio": 0.05}
    )
    privfl.run(cfg, out=tmp_path, progress=False)
    full = (tmp_path / "ef" / "metrics.jsonl").read_bytes()
    # crash after round 2: the checkpoint of round 2 (with residuals), two metric lines
    fed = privfl.Federation(cfg, folder=None)
    fed.run_round()
    fed.run_round()
    state = fed.state_dict()
    residuals = next(v for k, v in state["stages"].items() if "CompressUpdates" in k)
    assert len(residuals["residuals"]) > 0
    folder = RunFolder(tmp_path / "ef")
    folder.save_checkpoint(state)
    lines = full.decode().splitlines(keepends=True)
    folder.file(RunFile.METRICS).write_text("".join(lines[:2]))
    privfl.resume(tmp_path / "ef", progress=False)
    assert (tmp_path / "ef" / "metrics.jsonl").read_bytes() == full
    # and without the residuals the resumed run differs (the test can fail)
    fed2 = privfl.Federation(cfg, folder=None)
    state["stages"] = {
        k: ({"residuals": {}} if "CompressUpdates" in k else v) for k, v in state["stages"].items()
    }
    fed2.load_state_dict(state)
    fed2.metrics = fed2.metrics[:2]
    assert fed2.run_round()["train_loss"] is not None
    assert fed2.run_round() != json.loads(lines[3])
