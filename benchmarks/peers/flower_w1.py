"""W1 through Flower's simulation engine, beside privfl's engines measured in the same invocation.

W1 (benchmarks/perf/throughput.py): MLP 784-200-200-10 on synthetic 28x28 data, 100 clients x
60 examples, 20 clients a round, 1 local epoch, batch 10, lr 0.05, example-weighted FedAvg.

Flower side (flwr 1.42, its Message API): a ClientApp whose train handler runs the hand-written
loop's own local training (``HandWritten.train_client``: same data, same initial weights, same
per-client shuffles), a ServerApp running Flower's ``FedAvg`` strategy, and
``flwr.simulation.run_simulation`` on the Ray backend with one actor per CPU (``--cpus``,
``--client-cpus``); 100 virtual SuperNodes, node k holding privfl's client k. Round r trains
privfl's cohort of round r (``CohortFedAvg`` only replaces FedAvg's random node sampling), so
Flower's final model must equal the hand-written loop's up to float rounding: the script checks
that, and the test accuracy of both.

Timing: Flower's seconds per round run from one round's start to the next (ServerApp side:
sending the model, the clients' training in the Ray actors, FedAvg's aggregation, and the test
evaluation after the last round, as privfl's rounds do). Start-up (``run_simulation`` called
until round 1 starts: Ray, its actors, their imports, and each actor building the data set
and training one warm-up client on a first message to every node) and shut-down are reported
apart. privfl's hand-written loop, sequential and vectorized engines run first, through
throughput.py's ``run_w1`` (rounds alternating between them, first repeat a warm-up), with the
same number of rounds a repeat and torch's default threads (``--threads``).
Flower's rounds cannot be interleaved with them, so the ratios are of medians, not of paired
rounds: on a shared machine rerun before trusting a small difference.

    .venv-peers/bin/python benchmarks/peers/flower_w1.py [--rounds 5] [--repeats 2] [--json PATH]

``make bench-peers`` creates .venv-peers (torch 2.13.0 CPU, flwr[simulation]==1.42.0, privfl
itself) and runs this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# throughput.py (W1, the hand-written loop, run_w1). Ray's workers get the driver's sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))

import flwr
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from throughput import LOCAL_ENGINES, HandWritten, run_w1, w1_config

NODES = 100  # W1's clients: one Flower SuperNode each (partition id = privfl client id)
ACCURACY_TOLERANCE = 0.02  # "same work": final test accuracies within 2 points

_vec = torch.nn.utils.parameters_to_vector


def _weights(loop: HandWritten, arrays: ArrayRecord) -> torch.Tensor:
    """A Flower ArrayRecord (the model's state_dict) as the loop's flat weight vector."""
    loop.model.load_state_dict(arrays.to_torch_state_dict())
    return _vec(loop.params).detach().clone()


def _record(loop: HandWritten, w: torch.Tensor) -> ArrayRecord:
    torch.nn.utils.vector_to_parameters(w.clone(), loop.params)  # no aliasing of w
    return ArrayRecord(loop.model.state_dict())


# ----------------------------------------------------------------------------- ClientApp

_WORKER: dict[str, HandWritten] = {}  # per Ray actor: W1's data set and model, built once


def _worker_loop() -> HandWritten:
    if "w1" not in _WORKER:
        loop = HandWritten(w1_config())
        loop.train_client(0, 0, loop.w)  # warm-up (start-up), as privfl's first repeat is
        _WORKER["w1"] = loop
    return _WORKER["w1"]


client_app = ClientApp()


@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Start-up: builds this actor's copy of W1 and tells the server the node's partition."""
    _worker_loop()
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"node": ConfigRecord({"partition-id": pid})}), reply_to=msg)


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One client's local training: the hand-written loop's, on privfl client ``partition-id``."""
    loop = _worker_loop()
    cid = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    trained = loop.train_client(cid, rnd, _weights(loop, msg.content["arrays"]))
    metrics = MetricRecord(
        {"num-examples": len(loop.parts[cid]), "torch-threads": torch.get_num_threads()}
    )
    return Message(RecordDict({"arrays": _record(loop, trained), "metrics": metrics}), reply_to=msg)


# ----------------------------------------------------------------------------- ServerApp


class CohortFedAvg(FedAvg):
    """Flower's FedAvg, except that round r trains privfl's cohort of round r instead of a
    random sample of nodes, so both sides train the same clients. Aggregation is FedAvg's own
    (weighted by the clients' ``num-examples``)."""

    def __init__(self, cohort: Callable[[int], list[int]], node_of: dict[int, int]) -> None:
        super().__init__(fraction_evaluate=0.0)  # privfl evaluates centrally, as evaluate_fn
        self.cohort, self.node_of = cohort, node_of

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(record, dst_node_id=self.node_of[cid], message_type=MessageType.TRAIN)
            for cid in self.cohort(server_round)
        ]


_RUN: dict[str, object] = {}  # run_flower's settings in, the ServerApp's measurements out

server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    rounds = int(_RUN["rounds"])  # type: ignore[call-overload]
    loop = HandWritten(w1_config(rounds))  # cohorts, initial weights, test set (trains nothing)
    while len(nodes := list(grid.get_node_ids())) < NODES:  # SuperNodes registering
        time.sleep(0.05)
    # Every node's partition id; this first message also makes every Ray actor build W1.
    queries = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    replies = list(grid.send_and_receive(queries))
    errors = [m.error.reason for m in replies if m.has_error()]
    if errors or len(replies) != NODES:
        raise RuntimeError(f"start-up query: {len(replies)} replies, errors {errors[:3]}")
    node_of = {
        int(m.content["node"]["partition-id"]): m.metadata.src_node_id  # type: ignore[call-overload]
        for m in replies
    }
    stamps: list[float] = []  # end of round r (r = 0: start of round 1)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        out = None
        if server_round == rounds:  # the test evaluation after the last round, timed
            w = _weights(loop, arrays)
            _RUN["final_w"], _RUN["accuracy"] = w, loop.test_accuracy(w)
            out = MetricRecord({"accuracy": float(_RUN["accuracy"])})  # type: ignore[arg-type]
        stamps.append(time.perf_counter())
        return out

    strategy = CohortFedAvg(lambda r: loop.sampler.sample(r).tolist(), node_of)
    result = strategy.start(
        grid=grid,
        initial_arrays=_record(loop, loop.w),
        num_rounds=rounds,
        evaluate_fn=evaluate,
    )
    _RUN["stamps"] = stamps
    _RUN["client_threads"] = result.train_metrics_clientapp[rounds]["torch-threads"]


def run_flower(rounds: int, cpus: int, client_cpus: float, verbose: bool) -> dict[str, object]:
    """W1 for ``rounds`` rounds through ``run_simulation``; returns its timings and model."""
    _RUN.clear()
    _RUN["rounds"] = rounds
    backend_config = {
        "init_args": {"num_cpus": cpus},
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
    }
    t0 = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=NODES,
        backend_name="ray",
        backend_config=backend_config,  # type: ignore[arg-type]
        verbose_logging=verbose,
    )
    t_end = time.perf_counter()
    if "stamps" not in _RUN:
        raise RuntimeError("Flower's ServerApp did not finish (see the log above)")
    stamps: list[float] = _RUN["stamps"]  # type: ignore[assignment]
    per_round = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "rounds_s": per_round,
        "median_round_s": statistics.median(per_round),
        "startup_s": stamps[0] - t0,
        "shutdown_s": t_end - stamps[-1],
        "actors": int(cpus // client_cpus),
        "client_torch_threads": round(float(_RUN["client_threads"])),  # type: ignore[arg-type]
        "test_accuracy": _RUN["accuracy"],
        "final_w": _RUN["final_w"],
    }


# ----------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5, help="rounds of Flower and of each repeat")
    ap.add_argument("--repeats", type=int, default=2, help="privfl's timed repeats (+1 warm-up)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's CPUs")
    ap.add_argument("--client-cpus", type=float, default=1.0, help="CPUs of each Ray actor")
    ap.add_argument("--threads", type=int, help="privfl's torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--verbose", action="store_true", help="Flower's INFO log")
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)

    print(f"== privfl on W1: {args.repeats} repeats x {args.rounds} rounds (+1 warm-up)")
    ours = run_w1(args.repeats, LOCAL_ENGINES, rounds=args.rounds)
    engines: dict[str, dict[str, float]] = ours["engines"]  # type: ignore[assignment]

    print(f"== Flower {flwr.__version__} on W1: {args.rounds} rounds, Ray backend")
    fl = run_flower(args.rounds, args.cpus, args.client_cpus, args.verbose)
    ref = HandWritten(w1_config(args.rounds))  # the same rounds by the hand-written loop, untimed
    for _ in range(args.rounds):
        ref.round()
    diff = float((fl.pop("final_w") - ref.w).abs().max())  # type: ignore[operator]

    flower_s = float(fl["median_round_s"])  # type: ignore[arg-type]
    rows = [("Flower", flower_s, float(fl["test_accuracy"]))]  # type: ignore[arg-type]
    rows += [(n, r["median_round_s"], r["test_accuracy"]) for n, r in engines.items()]
    print()
    print(
        f"W1, median s/round: Flower {flwr.__version__} over {args.rounds} rounds "
        f"({fl['actors']} Ray actors, torch threads {fl['client_torch_threads']} each); "
        f"privfl over {ours['rounds']} rounds (torch threads {torch.get_num_threads()})"
    )
    print(f"  {'':<14} {'s/round':>8} {'x Flower':>9} {'test acc':>9}")
    ratios: dict[str, float] = {}
    for name, secs, acc in rows:
        ratios[name] = flower_s / secs
        print(f"  {name:<14} {secs:8.3f} {ratios[name]:8.2f}x {acc:9.4f}")
    for name in engines:
        label = name if name == "hand-written" else f"privfl {name}"
        print(f"  {label} is {ratios[name]:.1f}x Flower (rounds a second)")
    print(
        f"  Flower start-up {fl['startup_s']:.1f} s (run_simulation called until round 1: Ray, "
        f"its actors, their imports, W1's data, a warm-up client), shut-down "
        f"{fl['shutdown_s']:.1f} s"
    )
    print(f"  Flower rounds: {', '.join(f'{s:.3f}' for s in fl['rounds_s'])} s")  # type: ignore[attr-defined]
    accs = [acc for _, _, acc in rows]
    same = max(accs) - min(accs) <= ACCURACY_TOLERANCE
    print(
        f"  same work: |Flower's model - hand-written loop's| max {diff:.1e}; test accuracy "
        + ", ".join(f"{n} {a:.4f}" for n, _, a in rows)
        + (" (within 2 points)" if same else " (NOT within 2 points)")
    )

    if args.json:
        out = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "versions": {"flwr": flwr.__version__, "torch": torch.__version__},
            "rounds": args.rounds,
            "flower": fl | {"max_abs_diff_vs_hand_written": diff},
            "privfl": ours,
            "x_flower": ratios,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    # Run the module under its own name: Ray pickles the ClientApp's functions by reference to
    # ``flower_w1`` (importable in the actors), so each actor keeps one W1 data set; functions
    # of __main__ would be pickled by value, with a fresh, empty cache on every message.
    import flower_w1

    flower_w1.main()
