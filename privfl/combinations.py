"""Which config sections combine: every rule about two or more sections, in one place.

A section's own values are checked by its pydantic model; a rule that looks at two sections
(a robust rule under secure aggregation, central DP with a median, FedNova under HE) lives
here, as one :class:`CombinationRule`, and :func:`check_combinations` runs them all when a
:class:`~privfl.config.Config` is validated, so an impossible run is refused with exit 2
before anything is built or trained. :func:`combination_table` writes the rules as the
documentation's "what combines with what" table (docs/combinations.md). A test walks every
pair of sections and runs each pair that is accepted, so a rule missing from here shows up as
a failing pair.

The module imports nothing from :mod:`privfl.config` at run time (the config calls it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privfl.config import Config


@dataclass(frozen=True)
class CombinationRule:
    """One impossible combination.

    Attributes:
        sections: the sections (and values) it concerns, as a reader writes them.
        summary: why, in a few words (the docs table).
        check: the message refusing ``config``, or None when the combination is absent.
    """

    sections: tuple[str, ...]
    summary: str
    check: Callable[[Config], str | None]


def _secure_channels(c: Config) -> list[str]:
    d = c.defense
    return [n for n, on in (("defense.secagg", d.secagg), ("defense.he", d.he)) if on is not None]


def _dp_mode(c: Config) -> str | None:
    return None if c.defense.dp is None else c.defense.dp.mode


def _fednova(c: Config) -> bool:
    het = c.federation.heterogeneity
    return het is not None and het.fednova


def _compression(c: Config) -> str | None:
    return None if c.compression is None else str(c.compression.method)


# ---------------------------------------------------------------- the rules


def _robust_secure(c: Config) -> str | None:
    channels = _secure_channels(c)
    if c.defense.robust is None or not channels:
        return None
    return (
        f"defense.robust (rule = '{c.defense.robust.rule}') cannot be combined with "
        f"{' and '.join(sorted(channels))}: robust rules need every client's update in "
        "plaintext, and the server only learns their sum under secure aggregation or HE"
    )


def _incentives_secure(c: Config) -> str | None:
    channels = _secure_channels(c)
    if c.incentives is None or not channels:
        return None
    return (
        f"[incentives] (method = '{c.incentives.method}') cannot be combined with "
        f"{' and '.join(sorted(channels))}: contribution measurement values each client's "
        "update, and the server only learns their sum; what it can still measure is the "
        "whole cohort's contribution per round (the change in test_accuracy in metrics.jsonl)"
    )


def _secagg_he(c: Config) -> str | None:
    if c.defense.secagg is None or c.defense.he is None:
        return None
    return (
        "defense.secagg and defense.he cannot be combined: each is a channel that carries the "
        "updates to the server (masked or encrypted); choose one"
    )


def _secagg_degree(c: Config) -> str | None:
    from privfl.defenses.secagg.config import secagg_degree_problem

    if c.defense.secagg is None:
        return None
    return secagg_degree_problem(c.defense.secagg, c.federation.clients_per_round)


def _he_min_clients(c: Config) -> str | None:
    he = c.defense.he
    if he is None or he.min_clients <= c.federation.clients_per_round:
        return None
    return (
        f"defense.he.min_clients = {he.min_clients} exceeds federation.clients_per_round = "
        f"{c.federation.clients_per_round}: the key holder decrypts no sum of fewer clients, "
        "so every round would abort; lower min_clients or raise clients_per_round"
    )


def _central_dp_robust(c: Config) -> str | None:
    if _dp_mode(c) != "central" or c.defense.robust is None:
        return None
    return (
        f"defense.dp.mode = 'central' cannot be combined with defense.robust (rule = "
        f"'{c.defense.robust.rule}'): DP-FedAvg adds noise calibrated to the sum of clipped "
        "updates (sensitivity clip), and a robust rule is not that sum; use mode = 'local' "
        "(noise before the robust rule) or drop one"
    )


def _ftrl_robust(c: Config) -> str | None:
    if _dp_mode(c) != "ftrl" or c.defense.robust is None:
        return None
    return (
        f"defense.dp.mode = 'ftrl' cannot be combined with defense.robust (rule = "
        f"'{c.defense.robust.rule}'): DP-FTRL's tree noise is calibrated to the sum of clipped "
        "updates (sensitivity clip per round), and a robust rule is not that sum; use mode = "
        "'local' (noise before the robust rule) or drop one"
    )


def _ftrl_server_optimizer(c: Config) -> str | None:
    opt = c.federation.server_optimizer
    if _dp_mode(c) != "ftrl" or opt == "fedavg":
        return None
    return (
        f"defense.dp.mode = 'ftrl' cannot be combined with federation.server_optimizer = "
        f"'{opt}': DP-FTRL sets the model to theta_0 + server_lr x (noisy prefix sum) / "
        "clients_per_round, which FedAvg's step x += server_lr x delta gives exactly from the "
        "prefix sum's increments; momentum or adaptive steps would act on the tree's "
        "correlated noise, which the paper's analysis does not cover (its momentum variant is "
        "not built); use server_optimizer = 'fedavg' (server_lr is the FTRL learning rate)"
    )


def _qffl(c: Config) -> str | None:
    if c.federation.server_optimizer != "qffl":
        return None
    hide = _secure_channels(c)
    if hide:
        return (
            f"federation.server_optimizer = 'qffl' cannot be combined with "
            f"{' and '.join(sorted(hide))}: q-FedAvg weighs each client's update by its own "
            "loss (F_k^q / sum h_k), so the server needs every update and loss, and it only "
            "learns their sum under secure aggregation or HE"
        )
    others = []
    if c.defense.robust is not None:
        others.append(f"defense.robust (rule = '{c.defense.robust.rule}')")
    if _fednova(c):
        others.append("federation.heterogeneity.normalization = 'fednova'")
    if _compression(c) == "sign":
        others.append("compression sign (majority vote)")
    if others:
        return (
            f"federation.server_optimizer = 'qffl' cannot be combined with {others[0]}: both "
            "replace the aggregation rule (q-FedAvg's is -sum Delta_k / sum h_k); choose one"
        )
    if _dp_mode(c) is not None:
        return (
            f"federation.server_optimizer = 'qffl' cannot be combined with defense.dp (mode = "
            f"'{_dp_mode(c)}'): every client sends its loss F_k in the clear, which no DP mode "
            "accounts for, and central DP's noise is calibrated to the weighted mean of clipped "
            "updates, which q-FedAvg's loss-weighted step is not"
        )
    if _canary_clients(c):
        return (
            "federation.server_optimizer = 'qffl' cannot be combined with [audit] method = "
            "'canary_clients': canary updates are crafted and carry no loss F_k to weigh them by"
        )
    return None


def _canary_clients(c: Config) -> bool:
    return c.audit is not None and c.audit.method == "canary_clients"


def _audit_sample_dp(c: Config) -> str | None:
    if not _canary_clients(c) or _dp_mode(c) != "sample":
        return None
    return (
        "audit: the canary-client audit measures user-level privacy; defense.dp.mode = "
        "'sample' protects examples, so its bound is not comparable (use audit.method = "
        "'one_run', which audits examples, or mode 'central' or 'local')"
    )


def _audit_fednova(c: Config) -> str | None:
    if not _canary_clients(c) or not _fednova(c):
        return None
    return (
        "audit cannot be combined with federation.heterogeneity.normalization = 'fednova': "
        "the audit's canary updates are crafted, not trained, so they have no local step "
        "count for FedNova to normalize by"
    )


def _heterogeneity_sample_dp(c: Config) -> str | None:
    het = c.federation.heterogeneity
    if het is None or _dp_mode(c) != "sample":
        return None
    if het.local_steps is not None:
        return (
            "federation.heterogeneity.local_steps cannot be combined with defense.dp.mode = "
            "'sample': DP-SGD's privacy accounting is calibrated to the configured local steps"
        )
    return (
        "federation.heterogeneity cannot be combined with defense.dp.mode = 'sample': "
        "heterogeneous clients run the plain SGD trainer, and DP-SGD replaces it"
    )


def _fednova_weighted_mean(c: Config) -> str | None:
    if not _fednova(c):
        return None
    others = _secure_channels(c) + (["defense.robust"] if c.defense.robust is not None else [])
    if _dp_mode(c) in ("central", "ftrl"):
        others.append(f"defense.dp.mode = '{_dp_mode(c)}'")
    if not others:
        return None
    return (
        "federation.heterogeneity.normalization = 'fednova' replaces the weighted mean with a "
        f"step-normalized one, which {', '.join(others)} cannot use; choose one"
    )


def _fednova_prox(c: Config) -> str | None:
    if not _fednova(c) or c.federation.prox_mu <= 0:
        return None
    return (
        "federation.heterogeneity.normalization = 'fednova' normalizes SGD (with or without "
        "momentum), not FedProx: set federation.prox_mu = 0"
    )


def _sparse_secure(c: Config) -> str | None:
    m, channels = _compression(c), _secure_channels(c)
    shared = c.compression is not None and c.compression.shared_seed
    if not channels or not (m == "topk" or (m == "randk" and not shared)):
        return None
    return (
        f"compression.method = '{m}' cannot be combined with {channels[0]}: each client keeps "
        "different coordinates (supports differ), so the masked/encrypted vectors would have "
        "to carry all coordinates of every client and the sparsity saves nothing; use method "
        "= 'randk' with shared_seed = true (every client keeps the same coordinates) or "
        "method = 'qsgd'"
    )


def _randk_he(c: Config) -> str | None:
    if _compression(c) != "randk" or c.defense.he is None:
        return None
    return (
        "compression.method = 'randk' cannot be combined with defense.he: the HE channel "
        "encrypts all d coordinates (it does not use a shared support), so random-k saves "
        "nothing and its d/k-scaled values would meet BFV's clip; use defense.secagg with "
        "shared_seed = true, or method = 'qsgd'"
    )


def _sign_weighted_mean(c: Config) -> str | None:
    if _compression(c) != "sign":
        return None
    others = _secure_channels(c)
    if c.defense.robust is not None:
        others.append("defense.robust")
    if _dp_mode(c) in ("central", "ftrl"):
        others.append(f"defense.dp.mode = '{_dp_mode(c)}'")
    if _fednova(c):
        others.append("federation.heterogeneity.normalization = 'fednova'")
    if not others:
        return None
    return (
        "compression.method = 'sign' is aggregated by majority vote (Bernstein et al. 2018), "
        f"not by the weighted mean that {', '.join(others)} needs; choose one"
    )


def _membership_shadows_natural(c: Config) -> str | None:
    m = c.attack.membership
    if m is None or m.method == "loss" or m.target != "global" or c.data.partition != "natural":
        return None
    return (
        f"attack.membership.method = '{m.method}' trains shadow federations on population "
        "examples, which include test examples without a writer; data.partition = 'natural' "
        "splits by writer. Use method = 'loss' or another partition"
    )


def _distributed_dp(c: Config) -> str | None:
    if _dp_mode(c) != "distributed":
        return None
    secagg = c.defense.secagg
    if secagg is None:
        return (
            "defense.dp.mode = 'distributed' needs a defense.secagg section: each client's "
            "noise share protects it only when the server sees nothing but the masked sum; add "
            "one (e.g. --set defense.secagg.neighbours=all) or use mode = 'central'"
        )
    bits = c.defense.dp.bits
    if bits is not None and bits > secagg.bits:
        return (
            f"defense.dp.bits = {bits} exceeds defense.secagg.bits = {secagg.bits}: the "
            "clients' vectors in Z_{2^bits} must fit the secure aggregation ring; raise "
            "defense.secagg.bits or lower defense.dp.bits"
        )
    if c.compression is not None:
        return (
            f"defense.dp.mode = 'distributed' cannot be combined with compression (method = "
            f"'{c.compression.method}'): the clients send the discrete Gaussian's integer "
            "vectors of every rotated coordinate, not a compressed update; drop one"
        )
    return None


def _peer_to_peer(c: Config) -> str | None:
    """The topology when it is not the star (no server), else None."""
    t = c.federation.topology
    return None if t == "star" else t


def _decentralized_server(c: Config) -> str | None:
    t = _peer_to_peer(c)
    if t is None:
        return None
    what = []
    channels = _secure_channels(c)
    if channels:
        what.append(
            f"{' and '.join(channels)} (a node must read each neighbour's model to average it; "
            "no server sums the updates, so secure aggregation and HE protect nothing here)"
        )
    if _dp_mode(c) in ("central", "distributed", "ftrl"):
        what.append(
            f"defense.dp.mode = '{_dp_mode(c)}' (its noise is added by or for a server that "
            "aggregates; use mode = 'local' (noise on every message) or 'sample' (DP-SGD))"
        )
    if c.defense.robust is not None:
        what.append("defense.robust (a robust gossip rule is not built)")
    f = c.federation
    if f.server_optimizer != "fedavg" or f.server_lr != 1.0:
        what.append(
            f"federation.server_optimizer = '{f.server_optimizer}' with server_lr = "
            f"{f.server_lr:g} (no server steps; nodes average)"
        )
    if getattr(c, "incentives", None) is not None:
        what.append("[incentives] (measured from a server's view of every update)")
    if not what:
        return None
    return f"federation.topology = '{t}' has no server, so it cannot be combined with " + "; ".join(
        what
    )


def _decentralized_parts(c: Config) -> str | None:
    t = _peer_to_peer(c)
    if t is None:
        return None
    what = []
    if c.audit is not None:
        what.append("[audit] (the audits read a server's view)")
    if c.compression is not None:
        what.append(
            f"compression (method = '{c.compression.method}'; compressed gossip needs "
            "CHOCO-SGD's error feedback, Koloskova et al. 2019, which is not built)"
        )
    if c.federation.heterogeneity is not None:
        what.append("federation.heterogeneity (a server's deadline and FedNova's weights)")
    if c.federation.engine == "ray":
        what.append("federation.engine = 'ray' (its actors train from one global model)")
    m = c.attack.membership
    if m is not None and m.target == "global":
        what.append(
            "attack.membership.target = 'global' (no global model is released; use target = "
            "'client': a curious node attacks its neighbour's model)"
        )
    if not what:
        return None
    return f"federation.topology = '{t}' cannot be combined with " + "; ".join(what)


def _decentralized_nodes(c: Config) -> str | None:
    t = _peer_to_peer(c)
    if t is None:
        return None
    f, n = c.federation, c.data.clients
    d = f.decentralized
    sampled = d is not None and d.participation == "sampled"
    default = type(f).model_fields["clients_per_round"].default
    if not sampled and f.clients_per_round not in (default, n):
        return (
            f"federation.clients_per_round = {f.clients_per_round}: under topology = '{t}' "
            f"every node ({n}) trains every round (D-PSGD); leave clients_per_round out, set it "
            "to data.clients, or set federation.decentralized.participation = 'sampled'"
        )
    if d is not None and d.observer >= n:
        return (
            f"federation.decentralized.observer = {d.observer} is not a node (data.clients = {n})"
        )
    return None


RULES: tuple[CombinationRule, ...] = (
    CombinationRule(
        ("defense.robust", "defense.secagg or defense.he"),
        "robust rules need each plaintext update; secure channels reveal only the sum",
        _robust_secure,
    ),
    CombinationRule(
        ("defense.secagg", "defense.he"), "both are the channel; choose one", _secagg_he
    ),
    CombinationRule(
        ("incentives", "defense.secagg or defense.he"),
        "contributions need each client's update; secure channels reveal only the sum",
        _incentives_secure,
    ),
    CombinationRule(
        ("defense.secagg.neighbours = k", "federation.clients_per_round"),
        "k below the smallest safe SecAgg+ degree for the cohort, dropout and corruption "
        "(Bell et al. 2020), unless allow_insecure",
        _secagg_degree,
    ),
    CombinationRule(
        ("defense.he.min_clients", "federation.clients_per_round"),
        "a cohort smaller than the fewest clients the key holder decrypts: every round aborts",
        _he_min_clients,
    ),
    CombinationRule(
        ("defense.dp.mode = 'central'", "defense.robust"),
        "central noise is calibrated to the clipped sum, which a robust rule is not",
        _central_dp_robust,
    ),
    CombinationRule(
        ("defense.dp.mode = 'ftrl'", "defense.robust"),
        "the tree noise is calibrated to the clipped sum, which a robust rule is not",
        _ftrl_robust,
    ),
    CombinationRule(
        ("defense.dp.mode = 'ftrl'", "federation.server_optimizer other than fedavg"),
        "theta_t = theta_0 + lr x noisy prefix sum is FedAvg's step on the prefix increments",
        _ftrl_server_optimizer,
    ),
    CombinationRule(
        (
            "federation.server_optimizer = 'qffl'",
            "defense.secagg or defense.he or defense.robust or defense.dp or fednova or "
            "compression sign or [audit] canary_clients",
        ),
        "q-FedAvg needs every client's update and loss in plaintext, and is an aggregation "
        "rule of its own",
        _qffl,
    ),
    CombinationRule(
        ("[audit] method = 'canary_clients'", "defense.dp.mode = 'sample'"),
        "the canary-client audit measures user-level privacy; DP-SGD's bound is per example",
        _audit_sample_dp,
    ),
    CombinationRule(
        ("[audit] method = 'canary_clients'", "normalization = 'fednova'"),
        "canary updates are crafted: no local step count to normalize by",
        _audit_fednova,
    ),
    CombinationRule(
        ("federation.heterogeneity", "defense.dp.mode = 'sample'"),
        "heterogeneous clients use the plain SGD trainer; DP-SGD's accounting assumes the "
        "configured steps",
        _heterogeneity_sample_dp,
    ),
    CombinationRule(
        (
            "normalization = 'fednova'",
            "defense.secagg or defense.he or defense.robust or dp.mode = 'central' or 'ftrl'",
        ),
        "FedNova replaces the weighted mean those need",
        _fednova_weighted_mean,
    ),
    CombinationRule(
        ("normalization = 'fednova'", "federation.prox_mu > 0"),
        "FedNova normalizes SGD, not FedProx",
        _fednova_prox,
    ),
    CombinationRule(
        ("compression topk or randk without shared_seed", "defense.secagg or defense.he"),
        "clients' supports differ, so nothing is saved under masks or encryption",
        _sparse_secure,
    ),
    CombinationRule(
        ("compression randk", "defense.he"),
        "the HE channel encrypts every coordinate",
        _randk_he,
    ),
    CombinationRule(
        (
            "compression sign",
            "defense.secagg or defense.he or defense.robust or dp.mode = 'central' or 'ftrl' or "
            "fednova",
        ),
        "sign compression is aggregated by majority vote, not a weighted mean",
        _sign_weighted_mean,
    ),
    CombinationRule(
        ("attack.membership lira or rmia, target 'global'", "data.partition = 'natural'"),
        "shadow federations draw test examples too, which have no writer to group by",
        _membership_shadows_natural,
    ),
    CombinationRule(
        ("defense.dp.mode = 'distributed'", "no defense.secagg, bits above its ring, compression"),
        "the noise shares protect only inside secure aggregation's ring, on every rotated "
        "coordinate",
        _distributed_dp,
    ),
    CombinationRule(
        (
            "federation.topology other than star",
            "defense.secagg or defense.he, dp.mode central/distributed/ftrl, defense.robust, "
            "a server optimizer, incentives",
        ),
        "peer-to-peer graphs have no server: nothing to sum securely, add noise at, or step",
        _decentralized_server,
    ),
    CombinationRule(
        (
            "federation.topology other than star",
            "audit, compression, heterogeneity, engine ray, membership target 'global'",
        ),
        "not built for gossip (a server's view, CHOCO-SGD, a deadline, one global model)",
        _decentralized_parts,
    ),
    CombinationRule(
        ("federation.topology other than star", "federation.clients_per_round"),
        "every node trains every round unless decentralized.participation = 'sampled'",
        _decentralized_nodes,
    ),
)


def combination_problems(config: Config) -> list[str]:
    """The message of every rule that ``config`` breaks (empty: the sections combine).

    >>> import privfl
    >>> central = {"mode": "central", "noise_multiplier": 1.0}
    >>> combination_problems(privfl.Config(name="demo", defense={"dp": central}))
    []

    A config that breaks a rule is refused when it is read, before anything is built:

    >>> privfl.config.config_from_dict(
    ...     {"name": "demo", "defense": {"dp": central, "robust": {"rule": "median"}}}
    ... )  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    privfl.errors.ConfigError: invalid config: defense.dp.mode = 'central' cannot be combined...
    """
    return [m for rule in RULES if (m := rule.check(config)) is not None]


def check_combinations(config: Config) -> None:
    """Refuse ``config`` when two of its sections cannot work together.

    Raises:
        ValueError: the first broken rule's message (the config loader turns it into a
            :class:`~privfl.errors.ConfigError`, exit 2).
    """
    problems = combination_problems(config)
    if problems:
        raise ValueError(problems[0])


def combination_table() -> str:
    """The rules as a Markdown table (docs/combinations.md, "What combines with what")."""
    rows = ["| sections | refused because |", "|---|---|"]
    rows += [f"| {' + '.join(f'`{s}`' for s in r.sections)} | {r.summary} |" for r in RULES]
    return "\n".join(rows)


__all__ = [
    "RULES",
    "CombinationRule",
    "check_combinations",
    "combination_problems",
    "combination_table",
]
