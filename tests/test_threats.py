"""One threat-model protocol: every active attack and defense carries one, the run writes them
into ``threats.json`` and the privacy report prints them."""

from __future__ import annotations

import json

from conftest import small_config

import privfl
from privfl.attacks.inversion import InversionThreat
from privfl.attacks.poisoning import PoisoningThreat
from privfl.defenses.dp.threat import PROTECTED, DPThreat
from privfl.defenses.he import HE_THREAT_MODEL
from privfl.defenses.robust.threat import RobustThreat
from privfl.defenses.secagg import SECAGG_THREAT_MODEL
from privfl.runfolder import RunFile
from privfl.threat import ThreatModel


def _threats(result) -> list[dict]:
    return json.loads((result.run_dir / RunFile.THREATS.value).read_text())


def test_every_threat_class_follows_the_protocol():
    for t in (SECAGG_THREAT_MODEL, HE_THREAT_MODEL, DPThreat("sample"), RobustThreat("krum", 1)):
        assert isinstance(t, ThreatModel)
        assert t.adversary and t.summary()
        json.dumps(t.to_record())
    assert {"adversary", "summary", "to_record"} <= set(dir(InversionThreat))
    assert {"adversary", "summary", "to_record"} <= set(dir(PoisoningThreat))


def test_inversion_dp_and_secagg_each_write_their_threat_model_and_the_report_prints_them(
    tmp_path,
):
    cfg = small_config(
        name="threats",
        federation={"rounds": 1, "clients_per_round": 4},
        defense={"dp": {"mode": "central", "noise_multiplier": 1.0}, "secagg": {}},
        attack={"inversion": {"method": "idlg", "max_targets": 1, "iterations": 5}},
    )
    result = privfl.run(cfg, out=tmp_path, progress=False)
    threats = _threats(result)
    assert [t["component"] for t in threats] == [
        "defense.secagg",
        "defense.dp",
        "attack.inversion",
    ]
    by = {t["component"]: t for t in threats}
    assert by["defense.secagg"]["server_learns"] == SECAGG_THREAT_MODEL.server_learns
    assert by["defense.dp"]["mode"] == "central"
    assert by["defense.dp"]["summary"] == PROTECTED["central"]
    assert by["attack.inversion"]["adversary"] == "honest-but-curious server"
    assert "local_training" in by["attack.inversion"]
    md = (result.run_dir / RunFile.REPORT_MD.value).read_text()
    section = md.split("## Threat models", 1)[1].split("\n## ", 1)[0]
    for t in threats:
        assert f"`{t['component']}`" in section
        assert t["adversary"] in section
    assert "honest-but-curious server reconstructs" in section


def test_poisoning_and_robust_rule_write_theirs(tmp_path):
    cfg = small_config(
        name="poison",
        federation={"rounds": 1, "clients_per_round": 4},
        defense={"robust": {"rule": "median"}},
        attack={"poisoning": {"method": "sign_flip", "fraction": 0.25}},
    )
    threats = _threats(privfl.run(cfg, out=tmp_path, progress=False))
    assert [t["component"] for t in threats] == ["defense.robust", "attack.poisoning"]
    assert threats[0]["rule"] == "median"
    poison = threats[1]
    assert poison["num_clients"] == 10 and len(poison["malicious"]) >= 1
    assert poison["adversary"].startswith(f"{len(poison['malicious'])} malicious clients")


def test_a_plain_run_writes_an_empty_list(tmp_path):
    cfg = small_config(name="plain", federation={"rounds": 1, "clients_per_round": 4})
    result = privfl.run(cfg, out=tmp_path, progress=False)
    assert _threats(result) == []
    assert not (result.run_dir / RunFile.REPORT_MD.value).exists()
