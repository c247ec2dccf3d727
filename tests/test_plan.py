"""The declarative plan: sections contribute, one assembler orders."""

import pytest
from conftest import small_config

from privfl.aggregation import WeightedMean
from privfl.errors import ConfigError
from privfl.pipeline import Contribution, Slot
from privfl.plan import assemble
from privfl.stages import ClientTransform


class _T(ClientTransform):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def apply(self, batch, ctx):
        return batch


def test_client_transforms_run_in_slot_order_whatever_the_section_order():
    # sections listed poison-first: the slots, not the listing, decide the order
    parts = [
        ("attack", Contribution(client_transforms=((Slot.POISON, _T("poison")),))),
        ("compression", Contribution(client_transforms=((Slot.COMPRESSION, _T("compress")),))),
        ("dp", Contribution(client_transforms=((Slot.DP, _T("clip")),))),
        ("audit", Contribution(client_transforms=((Slot.AUDIT, _T("canary")),))),
        ("het", Contribution(client_transforms=((Slot.STRAGGLERS, _T("drop")),))),
        ("dp-sgd", Contribution(client_transforms=((Slot.ACCOUNTING, _T("record")),))),
    ]
    stages = assemble(small_config(), parts)
    tags = [t.tag for t in stages.client_transforms]
    assert tags == ["drop", "record", "canary", "clip", "compress", "poison"]


def test_two_sections_replacing_the_aggregator_is_an_error():
    parts = [
        ("a", Contribution(aggregator=WeightedMean())),
        ("b", Contribution(aggregator=WeightedMean())),
    ]
    with pytest.raises(ConfigError, match="a and b each replace the aggregator"):
        assemble(small_config(), parts)


def test_trainer_wrappers_apply_to_the_chosen_trainer():
    seen = []

    def wrap(trainer):
        seen.append(trainer)
        return trainer

    stages = assemble(small_config(), [("p", Contribution(wrap_trainer=wrap))])
    assert seen == [stages.trainer]
