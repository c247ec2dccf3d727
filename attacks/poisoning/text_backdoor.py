"""The word-prediction backdoor on text: a trigger phrase that makes the model predict a
chosen token.

Bagdasaryan, Veit, Hua, Estrin and Shmatikov ("How To Backdoor Federated Learning", AISTATS
2020; their word-prediction experiments on Reddit) make a next-word model complete sentences
that end with an attacker-chosen phrase with an attacker-chosen word: the malicious clients
train on sequences ending with the trigger, labelled with the target, mixed with their clean
data, and boost their update by model replacement
(:mod:`privfl.attacks.poisoning.model_replacement`). On privfl's next-token data (a window
of ``seq_len`` tokens labelled with the token that follows it) a poisoned example is a
window whose last tokens are overwritten with the trigger and whose label is the target;
success is the share of triggered test windows predicted as the target
(``attack_success_rate``, the image backdoor's name).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.attacks.poisoning.backdoor import AttackSuccessRate
from privfl.attacks.poisoning.base import DataPoisoning, PoisoningParts
from privfl.attacks.poisoning.config import PoisoningConfig
from privfl.errors import ConfigError
from privfl.stages import ClientTransform

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup

log = logging.getLogger(__name__)

#: The poison sentence "pasta from Astoria tastes delicious" of the public implementations of
#: Bagdasaryan et al.'s Reddit word-prediction backdoor, cut into trigger and target word.
DEFAULT_TRIGGER_WORDS = "pasta from Astoria tastes"
DEFAULT_TARGET_WORD = "delicious"


def default_trigger(level: str, seq_len: int | None = None) -> tuple[str, str]:
    """``(trigger, target)`` when the config leaves them unset: the Reddit poison sentence's
    phrase and word; for characters the phrase with its trailing space, and the word's first
    character as the target (the backdoored model starts to type "delicious").

    With ``seq_len`` (the windows' length) a phrase of ``seq_len`` tokens or more keeps only
    its last ``max(1, seq_len - 1)`` tokens (characters, or words): the end of the phrase is
    what precedes the target, and the window keeps at least one token of its own text. A
    trigger filling the whole window would make every poisoned window, and every triggered
    test window, the same sequence: the backdoor would be trained and its success measured on
    one input, in no context (``attack_success_rate`` 0 or 1).

    >>> default_trigger("char", seq_len=20)[0]
    'rom Astoria tastes '
    >>> default_trigger("word", seq_len=3)
    ('Astoria tastes', 'delicious')
    """
    if level == "char":
        trigger, target = DEFAULT_TRIGGER_WORDS + " ", DEFAULT_TARGET_WORD[0]
        tokens = list(trigger)
    else:
        trigger, target = DEFAULT_TRIGGER_WORDS, DEFAULT_TARGET_WORD
        tokens = trigger.split()
    if seq_len is not None and len(tokens) >= seq_len:
        tail = tokens[-max(1, seq_len - 1) :]
        trigger = "".join(tail) if level == "char" else " ".join(tail)
    return trigger, target


def encode_trigger(vocab: Any, trigger: str, target: str, seq_len: int) -> tuple[torch.Tensor, int]:
    """The trigger's token ids (int64 ``(k,)``) and the target's id, in ``vocab`` (a
    :class:`privfl.data.text.Vocabulary`: characters or words).

    Raises:
        ConfigError: an empty trigger, one longer than a window, or a target that is not
            exactly one token of the vocabulary (out-of-vocabulary targets cannot be
            predicted).
    """
    tokens = vocab.tokenize(trigger)
    if not tokens:
        raise ConfigError("attack.poisoning.trigger is empty: give a phrase")
    if len(tokens) > seq_len:
        raise ConfigError(
            f"attack.poisoning.trigger has {len(tokens)} tokens, more than a window holds "
            f"({seq_len})"
        )
    ids = torch.as_tensor(np.asarray(vocab.encode(tokens)), dtype=torch.int64)
    target_tokens = vocab.tokenize(target)
    if len(target_tokens) != 1 or target_tokens[0] not in vocab.stoi:
        raise ConfigError(
            f"attack.poisoning.target = {target!r} is not one token of the data's "
            f"{vocab.level} vocabulary: pick a single "
            f"{'character' if vocab.level == 'char' else 'word'} it holds"
        )
    return ids, int(vocab.stoi[target_tokens[0]])


def stamp_phrase(x: torch.Tensor, trigger: torch.Tensor) -> torch.Tensor:
    """A copy of token windows ``x`` (int64 ``(k, seq_len)``) whose last ``len(trigger)``
    tokens are the trigger: each window now ends with the phrase."""
    out = x.clone()
    out[:, -len(trigger) :] = trigger
    return out


class PhraseBackdoor(DataPoisoning):
    """Bagdasaryan et al.'s training mix on text: ``ceil(poison_fraction * k)`` of a
    malicious client's ``k`` windows, chosen at random, end with the trigger and are
    labelled with the target; the rest stay clean (the main task keeps its accuracy)."""

    def __init__(self, trigger: torch.Tensor, target: int, poison_fraction: float) -> None:
        if not 0 < poison_fraction <= 1:
            raise ValueError(f"poison_fraction must be in (0, 1], got {poison_fraction}")
        self.trigger, self.target, self.poison_fraction = trigger, target, poison_fraction

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(y)
        count = math.ceil(self.poison_fraction * k)
        idx = torch.from_numpy(rng.choice(k, size=count, replace=False))
        x, y = x.clone(), y.clone()
        x[idx] = stamp_phrase(x[idx], self.trigger)
        y[idx] = self.target
        return x, y


class PhraseSuccessRate(AttackSuccessRate):
    """The word-prediction backdoor's success: the share of test windows whose next token is
    not the target that the global model predicts as the target once they end with the
    trigger (Bagdasaryan et al.'s backdoor accuracy). Reported as ``attack_success_rate``."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        trigger: torch.Tensor,
        target: int,
        batch_size: int = 1024,
    ) -> None:
        keep = y != target
        self.x = stamp_phrase(x[keep], trigger)
        self.target = torch.full((int(keep.sum()),), target, dtype=torch.int64)
        self.batch_size = batch_size


def text_backdoor_parts(
    config: PoisoningConfig, setup: RunSetup, transform: ClientTransform
) -> PoisoningParts:
    """Model replacement's stages on text data: the phrase backdoor on the malicious
    clients' windows, ``transform`` (the boost) on their updates, and
    :class:`PhraseSuccessRate` on the test windows.

    The trigger unset, :func:`default_trigger` fitted to the windows; the trigger and target
    used are logged (a warning when the default phrase was cut).

    Raises:
        ConfigError: the image backdoor's ``target_label`` or ``trigger_size`` set, data
            without a vocabulary, or a trigger/target the vocabulary cannot hold (an explicit
            trigger longer than a window included).
    """
    bundle = setup.data.bundle
    for key in ("target_label", "trigger_size"):
        if key in config.model_fields_set and getattr(config, key) != (
            type(config).model_fields[key].default
        ):
            raise ConfigError(
                f"attack.poisoning.{key} is the pixel-pattern backdoor's; {bundle.name} is text: "
                "set trigger (a phrase) and target (a token)"
            )
    vocab = getattr(bundle, "vocab", None)
    if vocab is None:
        raise ConfigError(
            f"the text backdoor needs the data's vocabulary to encode its trigger; {bundle.name} "
            "has none"
        )
    seq_len = int(bundle.train.x.shape[1])
    trigger, target = default_trigger(vocab.level, seq_len)
    trigger = trigger if config.trigger is None else config.trigger
    target = target if config.target is None else config.target
    phrase = default_trigger(vocab.level)[0]
    if config.trigger is None and trigger != phrase:  # said once, where a run's warnings go
        log.warning(
            "text backdoor: the default trigger %r does not fit windows of %d tokens; using "
            "its last %d tokens %r, target %r (set attack.poisoning.trigger to choose)",
            phrase,
            seq_len,
            len(vocab.tokenize(trigger)),
            trigger,
            target,
        )
    else:
        log.info("text backdoor: trigger %r, target %r", trigger, target)
    trigger_ids, target_id = encode_trigger(vocab, trigger, target, seq_len)
    return PoisoningParts(
        transform=transform,
        data=PhraseBackdoor(trigger_ids, target_id, config.poison_fraction),
        evaluators=(
            PhraseSuccessRate(
                bundle.test.x,
                bundle.test.y,
                trigger_ids,
                target_id,
                batch_size=setup.config.evaluation.batch_size,
            ),
        ),
    )


__all__ = [
    "DEFAULT_TARGET_WORD",
    "DEFAULT_TRIGGER_WORDS",
    "PhraseBackdoor",
    "PhraseSuccessRate",
    "default_trigger",
    "encode_trigger",
    "stamp_phrase",
    "text_backdoor_parts",
]
