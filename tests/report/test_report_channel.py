"""A report of a run over a secure channel says what the server sees and what is still
trusted (issue 16, item 5: HE's remaining trust assumption in the report too)."""

from __future__ import annotations

import re

from conftest import small_config

import privfl
from privfl.defenses.he import HE_THREAT_MODEL
from privfl.defenses.secagg import SECAGG_THREAT_MODEL


def _section(tmp_path, name: str, channel: dict) -> str | None:
    cfg = small_config(
        name=name,
        federation={"rounds": 1, "clients_per_round": 4},
        defense={"dp": {"mode": "central", "noise_multiplier": 1.0}, **channel},
    )
    md = (privfl.run(cfg, out=tmp_path, progress=False).run_dir / "report.md").read_text()
    m = re.search(r"## What the server sees: ([^\n]*)\n(.*?)\n## ", md, re.S)
    return None if m is None else m.group(1) + "\n" + m.group(2)


def test_he_report_names_the_key_holder_and_colluding_clients_as_trusted(tmp_path):
    text = _section(tmp_path, "he", {"he": {}})
    assert text is not None and text.startswith("homomorphic encryption")
    for item in HE_THREAT_MODEL.not_covered:
        assert item in text
    assert "key holder" in text and "colluding with the server" in text


def test_secagg_report_prints_its_threat_model_and_a_plain_run_has_no_channel_section(tmp_path):
    text = _section(tmp_path, "sa", {"secagg": {}})
    assert text is not None and text.startswith("secure aggregation")
    assert SECAGG_THREAT_MODEL.server_learns in text
    assert _section(tmp_path, "plain", {}) is None
