"""The privacy-budget report of a run: ``report.md`` and a self-contained ``report.html``.

Everything comes from the run folder's files (``config.toml``, ``ledger.json``,
``metrics.jsonl``, ``partition.json``, ``audit.json``), so the report written at the end of a
run and the one ``privfl report runs/NAME`` writes later are the same. Privacy figures come
from the ledger only (``ledger.json`` and its events); no epsilon is computed elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privfl.accounting import ACCOUNTANT_NOTES, AccountantName
from privfl.defenses.dp.config import DPConfig
from privfl.defenses.dp.threat import PROTECTED
from privfl.ledger import Unit
from privfl.provenance import package_version
from privfl.report.document import (
    Alert,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from privfl.report.plots import (
    plot_accuracy_vs_epsilon,
    plot_client_epsilons,
    plot_epsilon_per_round,
)
from privfl.report.runfiles import RunFiles, as_float, fmt
from privfl.runfolder import RunFile

if TYPE_CHECKING:
    pass

EPSILON_WARN = 10.0
CLIPPED_WARN = 0.9

#: What, besides the noise, the seed decides in each mode (``secure_rng`` covers it too).
SEEDED_EXTRAS: dict[str, str] = {
    "sample": ", and the Poisson lots of DP-SGD (which examples each step uses),",
    "central": ", and the Poisson cohorts (who took part in each round),",
    "local": "",
    "distributed": ", and each client's rounding and noise-share draws,",
    "ftrl": "",
}

#: Said in bold when SecAgg+ was allowed below its safe degree.
INSECURE_SECAGG = (
    "**SecAgg+ runs below its safe degree (`defense.secagg.allow_insecure = true`): dropouts "
    "can disconnect the survivors' masking graph and reveal partial sums to the server.**"
)


def randomness_text(dp: DPConfig, seed: int) -> str:
    """What the run's randomness means for the guarantee: with ``secure_rng = false`` the noise
    is reproducible from ``config.toml`` (said plainly); with ``true`` it comes from the OS."""
    extras = SEEDED_EXTRAS[dp.mode]
    if not dp.secure_rng:
        return (
            f"**The noise is reproducible from the config.** The noise draws{extras} come "
            f"from random streams seeded by `seed = {seed}`, which `config.toml` records "
            "(`defense.dp.secure_rng = false`). Anyone holding `config.toml`, or guessing the "
            "seed, can regenerate the noise and subtract it exactly: **the guarantee above "
            "holds only against someone without `config.toml`.** That suits research (the run "
            "repeats number for number); for a release set `defense.dp.secure_rng = true`."
        )
    text = (
        f"The noise draws{extras} come from the operating system's cryptographically "
        "secure generator (`defense.dp.secure_rng = true`: `os.urandom`, fresh bits on every "
        "draw; Gaussian values hardened against floating-point attacks as in Opacus' secure "
        "mode), so nothing about them follows from `config.toml`. The run's numbers cannot be "
        "repeated, and a run resumed from its checkpoint (`--resume`) goes on with fresh draws: "
        "its numbers differ from an uninterrupted run's, its guarantee does not."
    )
    if dp.mode != "central":
        text += (
            " Which clients take part in each round still follows the seed: the server sees "
            "who sends anyway, and this mode's guarantee does not rest on the cohorts being "
            "secret."
        )
    return text


# ---------------------------------------------------------------------------- one run


def build_run_report(run: RunFiles, plots: Path) -> Document:
    """The report of one run; its PNGs are written into ``plots``."""
    plots.mkdir(parents=True, exist_ok=True)
    cfg, dp, led = run.config, run.config.defense.dp, run.ledger
    doc = Document(f"Privacy-budget report: {cfg.name}")
    alerts: list[str] = []
    if cfg.defense.secagg is not None and cfg.defense.secagg.allow_insecure:
        doc.add(Paragraph(INSECURE_SECAGG))
        alerts.append(INSECURE_SECAGG)
    if dp is not None and not led.events and led.stop is not None:
        doc.add(
            Paragraph(
                "**No privacy was spent: the budget stopped the run before its first round** "
                "(see *Stopping at a budget*); its ledger is empty."
            )
        )
    elif dp is None or not led.events:
        doc.add(
            Paragraph(
                "**No differential privacy was active in this run: it carries no (epsilon, "
                "delta) guarantee.** Its ledger is empty."
            )
        )
    else:
        _dp_sections(doc, run, dp, plots, alerts)
    if dp is not None and led.max_epsilon is not None:
        _stopping_section(doc, run)
    _channel_section(doc, cfg)
    _threats_section(doc, run.threats)
    if run.audit is not None:
        _audit_section(doc, run.audit)
    _accuracy_section(doc, run, plots)
    doc.add(Heading("Warnings"))
    if alerts:
        doc.add(*(Alert(a) for a in alerts))
    else:
        doc.add(
            Paragraph(
                "None: delta < 1/N, epsilon <= 10, and the clip bound clipped at most "
                "90% of updates."
            )
        )
    return doc


def _stop_sentence(stop: dict[str, Any]) -> str:
    """The sentence of a budget stop (as the console said it)."""
    return f"the run stopped before round {stop['round']}: {stop['reason']}."


def _stopping_section(doc: Document, run: RunFiles) -> None:
    """ "Stopping at a budget": ``max_epsilon``, whether and why the run stopped, and for
    the modes where each client has its own budget, how many clients retired in each round."""
    led, cfg = run.ledger, run.config
    rounds, ran = cfg.federation.rounds, len(run.metrics)
    who = f"{led.accountant.value.upper()} at delta = {led.delta:g}"
    doc.add(Heading("Stopping at a budget"))
    if led.stop is not None:
        text = (
            f"`defense.dp.max_epsilon = {led.max_epsilon:g}` ({who}): **{ran} of {rounds} "
            f"rounds ran; {_stop_sentence(led.stop)}** No event that would pass the budget "
            "was recorded; "
            + (
                "the results are those of the last round run."
                if ran
                else "the model is the initial one."
            )
        )
    else:
        text = (
            f"`defense.dp.max_epsilon = {led.max_epsilon:g}` ({who}): all {rounds} rounds "
            "ran within it."
        )
    doc.add(Paragraph(text))
    if not any(m.get("budget_retired") for m in run.metrics):
        return
    total, rows = 0, []
    for m in run.metrics:
        k = len(m.get("budget_retired", ()))
        total += k
        if k:
            rows.append((str(m["round"]), str(k), str(total), str(len(m["clients"]))))
    doc.add(
        Paragraph(
            f"{total} of {cfg.data.clients} clients retired: a client whose next round would "
            "take its own epsilon past the budget no longer takes part (it is left out of "
            "every later cohort it is drawn in)."
        ),
        Table(("round", "clients retired", "retired so far", "clients trained"), tuple(rows)),
    )


def _channel_section(doc: Document, cfg: Any) -> None:
    """What the server sees through a secure channel (secagg, HE) and what is still trusted:
    the channel's :class:`~privfl.threat.ChannelThreat`."""
    from privfl.defenses.he.threat import HE_THREAT_MODEL
    from privfl.defenses.secagg.threat import SECAGG_THREAT_MODEL

    name, threat = (
        ("secure aggregation", SECAGG_THREAT_MODEL)
        if cfg.defense.secagg is not None
        else ("homomorphic encryption", HE_THREAT_MODEL)
        if cfg.defense.he is not None
        else (None, None)
    )
    if threat is None:
        return
    doc.add(
        Heading(f"What the server sees: {name}"),
        Paragraph(
            f"**Server:** {threat.server}. **Colluding clients:** {threat.colluding_clients}. "
            f"**It learns:** {threat.server_learns}."
        ),
        Paragraph(
            "**Still trusted, or not covered:** "
            + "; ".join(f"({i}) {t}" for i, t in enumerate(threat.not_covered, 1))
            + "."
        ),
    )


def _threats_section(doc: Document, threats: list[dict[str, Any]]) -> None:
    """The threat model of every active attack and defense, from ``threats.json``."""
    if not threats:
        return
    doc.add(
        Heading("Threat models"),
        Paragraph(
            "What each active attack and defense assumes about its adversary (`threats.json`)."
        ),
        Table(
            ("component", "adversary"),
            tuple((f"`{t['component']}`", str(t.get("adversary", ""))) for t in threats),
        ),
    )
    for t in threats:
        doc.add(Paragraph(f"**`{t['component']}`.** {t.get('summary', '')}"))


@dataclass(frozen=True)
class _DPRun:
    """What every section of a DP run's report reads: the run, its ledger's headline figures,
    where the PNGs go, and the warnings gathered for the report's last section."""

    run: RunFiles
    dp: DPConfig
    plots: Path
    alerts: list[str]

    @property
    def lj(self) -> dict[str, Any]:
        return self.run.ledger_json

    @property
    def delta(self) -> float:
        return float(self.lj["delta"])

    @property
    def headline(self) -> str:
        return str(self.lj["accountant"])

    @property
    def worst(self) -> str:
        return str(self.lj["worst_party"])

    @property
    def unit(self) -> str:
        return "example" if self.dp.mode == "sample" else "user"


def _dp_sections(
    doc: Document, run: RunFiles, dp: DPConfig, plots: Path, alerts: list[str]
) -> None:
    """The sections of a run with DP, in order; their warnings are appended to ``alerts``."""
    r = _DPRun(run, dp, plots, alerts)
    for section in (
        _headline,
        _protected_section,
        _mechanism_section,
        _accountants_section,
        _epsilon_per_round_section,
        _client_epsilon_section,
        _clipping_section,
        _distributed_section,
    ):
        section(doc, r)
    _budget_alerts(r)


def _distributed_section(doc: Document, r: _DPRun) -> None:
    """Distributed DP: the shares summed, the modular wrap-around measured, and what the
    dropped clients' missing shares cost in epsilon (the rounds' dominating noise multipliers
    with and without the dropouts, through the same RDP accountant)."""
    from privfl.accounting import epsilon_of
    from privfl.defenses.dp.ddgauss_accounting import ddgauss_epsilon

    rows = [m for m in r.run.metrics if m.get("ddp_noise_multiplier") is not None]
    if r.dp.mode != "distributed" or not rows:
        return
    q = r.run.config.federation.clients_per_round / r.run.config.data.clients
    actual = tuple((float(m["ddp_noise_multiplier"]), q, 1) for m in rows)
    full = tuple((float(m["ddp_noise_multiplier_no_dropout"]), q, 1) for m in rows)
    eps, eps_full = epsilon_of(actual, delta=r.delta), epsilon_of(full, delta=r.delta)
    direct = ddgauss_epsilon(
        [
            dict(
                sample_rate=q,
                clip=r.dp.clip,
                scale=float(m["ddp_scale"]),
                beta=r.dp.beta,
                dim=int(m["ddp_padded_dim"]),
                local_stddev=float(m["ddp_local_std"]),
                shares=int(m["ddp_shares"]),
            )
            for m in rows
        ],
        delta=r.delta,
    )
    shares = [int(m["ddp_shares"]) for m in rows]
    wraps = [float(m["ddp_wrap_rate"]) for m in rows]
    doc.add(
        Heading("Distributed noise"),
        Paragraph(
            f"Each round's noise is the sum of the surviving clients' discrete Gaussian shares "
            f"({min(shares)} .. {max(shares)} shares a round; each share has variance "
            f"(sigma c)^2 / {q * r.run.config.data.clients:g}, the expected cohort). Clients "
            "that dropped out after being sampled took their shares with them: without "
            f"dropouts the run would have spent epsilon = {fmt(eps_full)}; with them it spent "
            f"{fmt(eps)} (RDP), so **the dropouts cost {fmt(eps - eps_full)} epsilon**. "
            "Each round enters the ledger as the Poisson-subsampled Gaussian whose RDP "
            "dominates the paper's bound (Kairouz, Liu and Steinke 2021, with its tau term and "
            "the conditional rounding's norm bound; Zhu and Wang 2019's general subsampling "
            "bound): only the RDP figure is a bound for this mechanism, the PRV and GDP rows "
            "describe that dominating Gaussian. The paper's bound composed directly (integer "
            f"orders 2..256, no dominating Gaussian) gives epsilon = {fmt(direct)}; the "
            "ledger's figure is larger because one Gaussian must dominate the bound at every "
            "order the ledger converts at, and below order 2 the subsampled bound is only "
            "known through its value at 2 and a second-order bound. Neighbouring inputs "
            "replace one user's update "
            "by zero (the paper's relation). Modular wrap-around (measured in the simulation; "
            f"the server cannot see it): {np.mean(wraps):.2e} of the coordinates on average, "
            f"at most {max(wraps):.2e} in a round, for a configured probability of "
            f"{r.dp.modular_clip_probability:g}."
        ),
    )


def _headline(doc: Document, r: _DPRun) -> None:
    """The run's epsilon, its accountant and the party it belongs to."""
    eps, delta, headline = r.run.epsilon, r.delta, r.headline
    opacus = package_version("opacus", "?")
    if r.lj.get("epsilon_error"):
        doc.add(
            Paragraph(
                f"**epsilon = {fmt(eps)} at delta = {delta:g}** per {r.unit}, from Opacus' "
                f"**RDP** accountant (Opacus {opacus}), for the worst party "
                f"({r.worst}): the configured {headline.upper()} accountant failed here."
            )
        )
        r.alerts.append(f"the {headline.upper()} accountant failed: {r.lj['epsilon_error']}")
    else:
        doc.add(
            Paragraph(
                f"**epsilon = {fmt(eps)} at delta = {delta:g}** per {r.unit}, from Opacus' "
                f"**{headline.upper()}** accountant (Opacus {opacus}), for the "
                f"worst party ({r.worst}). {ACCOUNTANT_NOTES[headline]}"
            )
        )


def _protected_section(doc: Document, r: _DPRun) -> None:
    """ "What is protected": the mode's unit and adversary, and what the seed reveals."""
    doc.add(
        Heading("What is protected"),
        Paragraph(PROTECTED[r.dp.mode]),
        Paragraph(randomness_text(r.dp, r.run.config.seed)),
    )


def _mechanism_section(doc: Document, r: _DPRun) -> None:
    """ "Mechanism": the parameters table, central DP's Poisson cohorts, and the participation
    pattern DP-FTRL's epsilon assumes."""
    cfg = r.run.config
    doc.add(Heading("Mechanism"))
    doc.add(Table(("parameter", "value"), tuple(_mechanism_rows(r.run, r.dp))))
    if r.dp.mode == "central" and cfg.federation.sampling != "poisson":
        doc.add(
            Paragraph(
                f"Clients were **Poisson-sampled** at q = {cfg.federation.clients_per_round}/"
                f"{cfg.data.clients} (each client independently each round, so the cohort size "
                f'varies), replacing `federation.sampling = "{cfg.federation.sampling}"`: the '
                "amplification by sampling in the accounting assumes it."
            )
        )
    if r.dp.mode == "ftrl":
        doc.add(
            Paragraph(
                "**DP-FTRL's epsilon assumes this run's participation pattern.** Clients were "
                "not Poisson-sampled, so no amplification by sampling is claimed: the epsilon is "
                "that of the tree-aggregation Gaussian mechanism for the cohorts the config's "
                "seed fixed before the run (who takes part in which round is treated as public; "
                "a user dropping out only lowers its contribution). It holds for each user at "
                "once (user level) against whoever sees the released models; the server adds "
                "the noise and is trusted with the clipped updates."
            )
        )


#: The accountants' rows of the report, in order: ``(ledger key, label)``.
_ACCOUNTANT_ROWS = (
    ("rdp", "RDP (Balle et al. 2020 conversion)"),
    ("rdp_classic", "RDP, classic conversion"),
    ("prv", "PRV"),
    ("gdp", "GDP"),
)


def _accountants_section(doc: Document, r: _DPRun) -> None:
    """ "Epsilon at delta, by accountant": every accountant's figure, the headline marked."""
    doc.add(Heading(f"Epsilon at delta = {r.delta:g}, by accountant"))
    by_acc = r.lj.get("epsilon_by_accountant", {})
    table = []
    for key, label in _ACCOUNTANT_ROWS:
        mark = " (headline)" if key == r.headline else ""
        table.append(
            (
                label + mark,
                fmt(as_float(by_acc.get(key)) if by_acc.get(key) is not None else None),
                ACCOUNTANT_NOTES[key],
            )
        )
    doc.add(Table(("accountant", "epsilon", "what it is"), tuple(table)))
    if r.headline == AccountantName.GDP:
        r.alerts.append(
            "the headline accountant is GDP, a central-limit **approximation, not a bound**: it "
            "can underestimate epsilon. Quote the RDP or PRV figure as the guarantee."
        )


def _epsilon_per_round_section(doc: Document, r: _DPRun) -> None:
    """ "Epsilon per round": the worst party's cumulative epsilon, as a figure."""
    led = r.run.ledger
    who = r.worst if len(led.parties()) == 1 else "the worst party so far"
    img = plot_epsilon_per_round(
        led.epsilon_by_round(), r.plots / "epsilon.png", delta=r.delta, who=who, accountant="RDP"
    )
    doc.add(Heading("Epsilon per round"), Image(img, "epsilon per round"))


def _client_epsilon_section(doc: Document, r: _DPRun) -> None:
    """ "Per-client epsilon" (sample and local modes: each client has its own budget)."""
    per_party = {p: as_float(v) for p, v in r.lj.get("epsilon_per_party", {}).items()}
    if r.dp.mode not in ("sample", "local") or not per_party:
        return
    per_party_acc = str(r.lj.get("epsilon_per_party_accountant", r.headline)).upper()
    vals = np.array(list(per_party.values()))
    img = plot_client_epsilons(vals, r.plots / "client_epsilon.png", delta=r.delta, unit=r.unit)
    doc.add(
        Heading("Per-client epsilon"),
        Paragraph(
            f"Every client spends its own budget ({len(vals)} clients took part). "
            f"min {fmt(vals.min())}, median {fmt(float(np.median(vals)))}, max "
            f"{fmt(vals.max())} ({per_party_acc}). "
            + (
                "Clients sampled in more rounds, or holding fewer examples (a larger "
                "sampling rate), spend more."
                if r.dp.mode == "sample"
                else "Clients sampled in more rounds spend more."
            )
        ),
        Image(img, "per-client epsilon"),
    )


def _clipping_section(doc: Document, r: _DPRun) -> None:
    """ "Clipping": the share of clipped gradients or updates (a warning above 90%)."""
    fracs = [
        m["dp_clipped_fraction"] for m in r.run.metrics if m.get("dp_clipped_fraction") is not None
    ]
    if not fracs:
        return
    what = "per-example gradients" if r.dp.mode == "sample" else "client updates"
    mean = float(np.mean(fracs))
    doc.add(
        Heading("Clipping"),
        Paragraph(
            f"Share of {what} clipped to the bound: {mean:.1%} on average over "
            f"{len(fracs)} rounds (min {min(fracs):.1%}, max {max(fracs):.1%})."
        ),
    )
    if mean > CLIPPED_WARN:
        r.alerts.append(
            f"the clip bound clipped {mean:.0%} of {what} on average (> 90%): the bound is "
            "below almost every norm, so clipping rather than the data sets the size and "
            "weighting of what is learned; consider a larger `defense.dp.clip` (or, for "
            "central DP, `adaptive = true`)"
        )


def _budget_alerts(r: _DPRun) -> None:
    """Warnings about the budget itself: delta >= 1/N, no noise, epsilon above 10."""
    eps, delta = r.run.epsilon, r.delta
    n_units, what_units = _units(r.run)
    if n_units and delta >= 1 / n_units:
        r.alerts.append(
            f"delta = {delta:g} is >= 1/N = 1/{n_units} ({what_units}): a mechanism that "
            "publishes one unit's data outright satisfies such a delta; choose delta << 1/N"
        )
    if math.isinf(eps):
        r.alerts.append("the noise multiplier is 0: **no privacy guarantee** (epsilon is infinite)")
    elif eps > EPSILON_WARN:
        r.alerts.append(
            f"epsilon = {eps:.3g} > 10: a guarantee this weak says little; attacks are not "
            "ruled out"
        )


def _mechanism_rows(run: RunFiles, dp: DPConfig) -> list[tuple[str, str]]:
    cfg, led = run.config, run.ledger
    ev = led.events
    sigmas = sorted({e.noise_multiplier for e in ev})
    slacks = [m["dp_encoding_slack"] for m in run.metrics if m.get("dp_encoding_slack")]
    rows = [
        ("mode", f"{dp.mode}"),
        (
            "mechanism",
            _MECHANISM_KIND.get(dp.mode, _POISSON) + " (" + _mechanism_name(dp.mode) + ")",
        ),
        (
            "noise multiplier sigma",
            ", ".join(f"{s:.4g}" for s in sigmas)
            + (f" (calibrated to target epsilon {dp.target_epsilon})" if dp.target_epsilon else ""),
        ),
        ("clip norm", _clip_text(run, dp)),
        ("delta", f"{dp.delta:g}"),
        ("rounds", str(cfg.federation.rounds)),
        ("unit protected", Unit.EXAMPLE.value if dp.mode == "sample" else Unit.USER.value),
        ("parties with a budget", str(len(led.parties()))),
    ]
    qs = sorted({e.sample_rate for e in ev})
    steps = [e.steps for e in ev]
    if dp.mode == "sample":
        rows.append(
            ("sampling rate q (per client: batch / examples)", f"{min(qs):.4g} .. {max(qs):.4g}")
        )
        rows.append(("local DP-SGD steps per round", f"{min(steps)} .. {max(steps)}"))
        rows.append(("per-example gradients", f"Opacus, grad_sample_mode = {dp.grad_sample_mode}"))
    elif dp.mode == "central":
        rows.append(
            ("client sampling rate q", f"{qs[0]:.4g} (Poisson, clients_per_round / clients)")
        )
        rows.append(("denominator", f"fixed: q * N = {qs[0] * cfg.data.clients:g}"))
        if slacks:
            rows.append(
                (
                    "channel's rounding slack",
                    f"up to {max(slacks):.4g}: updates were clipped to the clip norm minus what "
                    "the channel's fixed-point encoding (or CKKS noise) can add to a decoded "
                    "update, so that each decoded contribution stays within the clip norm",
                )
            )
        if dp.adaptive:
            rows.append(
                (
                    "adaptive clipping",
                    f"target quantile {dp.target_quantile}, eta_C "
                    f"{dp.clip_lr}, count noise sigma_b "
                    f"{dp.count_noise_multiplier or cfg.federation.clients_per_round / 20:g}"
                    " (the sum gets the rest: Andrew et al. 2021, Theorem 1)",
                )
            )
    elif dp.mode == "ftrl":
        rows.extend(_ftrl_rows(run, dp))
    else:
        rows.append(("sampling rate q", "1 (no amplification: the server knows who sent what)"))
        rows.append(
            (
                "sensitivity",
                "2 x clip (any two updates are neighbours); the accountant sees sigma / 2",
            )
        )
    return rows


_POISSON = "Poisson-subsampled Gaussian mechanism"
#: The mechanism of the modes that are not a Poisson-subsampled Gaussian.
_MECHANISM_KIND: dict[str, str] = {
    "ftrl": "tree-aggregation Gaussian mechanism, no sampling",
}


def _ftrl_rows(run: RunFiles, dp: DPConfig) -> list[tuple[str, str]]:
    """DP-FTRL's rows: the trees, and the participation pattern the epsilon assumes (from the
    ledger's events and the rounds' cohorts)."""
    f = run.config.federation
    per_client: dict[int, list[int]] = {}
    for m in run.metrics:
        for c in m.get("clients", []):
            per_client.setdefault(int(c), []).append(int(m["round"]))
    most = max((len(v) for v in per_client.values()), default=0)
    gaps = [b - a for v in per_client.values() for a, b in zip(v, v[1:], strict=False)]
    d2 = sum(e.sensitivity**2 for e in run.ledger.events)
    trees = (
        f"one tree of {f.rounds} leaves (rounds)"
        if dp.restart_every is None
        else f"restarted every {dp.restart_every} rounds (a new tree from the current model)"
    )
    return [
        ("sampling rate q", "1 (no amplification by sampling: the cohorts are not Poisson)"),
        ("tree", trees),
        ("denominator", f"fixed: clients_per_round = {f.clients_per_round}"),
        (
            "participation pattern",
            f"the run's seeded cohorts ({len(per_client)} clients took part; the busiest in "
            f"{most} rounds; fewest rounds between two participations of a client: "
            f"{min(gaps) if gaps else '-'}; min_separation = {dp.min_separation})",
        ),
        (
            "sensitivity",
            f"sqrt({d2:.4g}) x clip: the worst user's sum over released nodes of (its rounds "
            "under the node)^2 (Kairouz et al. 2021, Appendix D)",
        ),
    ]


def _mechanism_name(mode: str) -> str:
    return {
        "sample": "DP-SGD, Abadi et al. 2016, in every client",
        "central": "DP-FedAvg, McMahan et al. 2018, noise added by the server",
        "local": "local Gaussian randomizer in every client",
        "distributed": "distributed discrete Gaussian, Kairouz et al. 2021, shares added by "
        "the clients inside secure aggregation",
        "ftrl": "DP-FTRL, Kairouz et al. 2021, noise added by the server",
    }[mode]


def _clip_text(run: RunFiles, dp: DPConfig) -> str:
    clips = [m["dp_clip"] for m in run.metrics if m.get("dp_clip") is not None]
    if dp.adaptive and clips:
        return f"adaptive: {clips[0]:.4g} at round 1 -> {clips[-1]:.4g} at the last round"
    what = "per-example gradient" if dp.mode == "sample" else "per-client update"
    return f"{dp.clip:g} (L2, {what})"


def _units(run: RunFiles) -> tuple[int | None, str]:
    dp = run.config.defense.dp
    if dp is not None and dp.mode == "sample":
        sizes = (run.partition or {}).get("examples")
        return (int(min(sizes)), "examples on the smallest client") if sizes else (None, "")
    return run.config.data.clients, "clients"


def _audit_section(doc: Document, a: dict[str, Any]) -> None:
    if "epsilon_lower_bound" in a:
        _one_run_section(doc, a)
        return
    bound = a.get("epsilon_bound")
    doc.add(
        Heading("Empirical audit (canaries)"),
        Paragraph(
            f"One-shot estimate of Andrew et al. 2023: {a['canaries']} canary clients inserted, "
            f"cosine of the final model delta with them (mean {a['inserted_cosine_mean']:.4f}, "
            f"std {a['inserted_cosine_std']:.4f}) against as many unseen canaries (mean "
            f"{a['unseen_cosine_mean']:.4f}, std {a['unseen_cosine_std']:.4f})."
        ),
        Table(
            ("", f"epsilon at delta = {a['delta']:g}"),
            (
                (
                    "empirical estimate (a lower-bound-like measurement)",
                    fmt(float(a["epsilon_empirical"])),
                ),
                (
                    "accountant's bound",
                    fmt(as_float(bound)) if bound is not None else "none (no DP)",
                ),
            ),
        ),
        Paragraph(
            "The estimate measures what this run's final model reveals about a canary; the "
            "bound holds for every dataset and adversary. An estimate far below the bound is "
            "expected (the bound covers the worst case); one above it would mean a bug."
        ),
    )


def _one_run_section(doc: Document, a: dict[str, Any]) -> None:
    bound = a.get("epsilon_bound")
    kind = (
        "mislabelled copies of test examples"
        if a["canary_kind"] == "mislabelled"
        else ("examples held out of the test split")
    )
    doc.add(
        Heading("Empirical audit (one run)"),
        Paragraph(
            f"One-run audit of Steinke, Nasr and Jagielski 2023: {a['canaries']} canaries "
            f"({kind}), each added to a random client's training data with probability 1/2 "
            f"({a['inserted']} were). Ranked by the final model's loss, the {a['guesses'] // 2} "
            f"most and {a['guesses'] // 2} least likely members were guessed IN and OUT: "
            f"{a['correct']} of {a['guesses']} guesses were right."
        ),
        Table(
            ("", f"epsilon at delta = {a['delta']:g}"),
            (
                (
                    f"empirical lower bound ({a['confidence']:.0%} confidence)",
                    fmt(float(a["epsilon_lower_bound"])),
                ),
                (
                    "accountant's upper bound",
                    fmt(as_float(bound)) if bound is not None else "none (no DP)",
                ),
            ),
        ),
        Paragraph(
            "The lower bound is a proof, at the stated confidence, that the training was not "
            "DP with any smaller epsilon; the accountant's bound is a proof that it was DP with "
            "its epsilon. A lower bound above the upper bound would mean a bug in one of them; "
            "one far below it is expected from a single run with few canaries."
        ),
    )


def _accuracy_section(doc: Document, run: RunFiles, plots: Path) -> None:
    acc = run.final_accuracy
    doc.add(Heading("Accuracy"), Paragraph(f"Final test accuracy: {fmt(acc, 4)}."))
    if not run.ledger.events or run.ledger.delta is None:
        return
    eps_by_round = dict(run.ledger.epsilon_by_round())
    pts = [
        (eps_by_round[m["round"]], m["test_accuracy"])
        for m in run.metrics
        if m.get("test_accuracy") is not None and m["round"] in eps_by_round
    ]
    if pts:
        e, a = zip(*pts, strict=True)
        img = plot_accuracy_vs_epsilon(
            [(run.config.name, e, a)],
            plots / "accuracy_epsilon.png",
            title="test accuracy vs epsilon spent (RDP), by round",
        )
        doc.add(Image(img, "accuracy vs epsilon"))


def write_document(doc: Document, out_dir: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``doc`` as ``out_dir/<stem>.md`` and the self-contained ``<stem>.html``."""
    md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    md.write_text(to_markdown(doc, out_dir))
    page.write_text(to_html(doc))
    return md, page


def write_run_report(run_dir: str | Path) -> tuple[Path, Path]:
    """(Re)write ``report.md`` and ``report.html`` (and ``plots/*.png``) of ``run_dir``."""
    run = RunFiles.load(run_dir)
    doc = build_run_report(run, Path(run_dir) / RunFile.PLOTS.value)
    return write_document(doc, Path(run_dir))


__all__ = [
    "INSECURE_SECAGG",
    "build_run_report",
    "randomness_text",
    "write_document",
    "write_run_report",
]
