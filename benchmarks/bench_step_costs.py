"""What one training step and one growth evaluation cost, side by side, at fixed widths.

The MNIST fits' time ratios (``bench_mnist.py``) are, per step, ``1 + evaluation / step``
plus the growth events. This script measures the two terms directly on MNIST images, for
the widths the NORTH* strategies end at, so the floor under a ratio can be read off:

- ``step``: one Adam training step of the static network (batch 512, forward, backward,
  update; plain torch, no skorch: the same for a growing and a static fit);
- ``exact``: one evaluation of the activation trigger as the callback runs it after every
  step in the paper's protocol, the sample buffer's activations recomputed with the
  current weights (every layer below its maximum width is evaluated);
- ``fast``: a fast-mode step: the same training step with the recording hooks on, then
  the trigger on the rows they kept (``activation_source="training"``: no forward pass,
  the float64 Gram formed only for the rows written since the last step, the rank count).

Rounds alternate the three, so they share the machine's conditions; ratios are medians
of the per-round ratios.

    python benchmarks/bench_step_costs.py
    python benchmarks/bench_step_costs.py --device cuda   # step_costs_cuda.*

Writes ``benchmarks/results/step_costs.csv`` and ``benchmarks/results/step_costs.md``.
"""

import argparse

import numpy as np
import pandas as pd
import torch
from _common import (
    add_device_option,
    command_line,
    default_data_home,
    environment,
    is_cuda,
    markdown_table,
    set_threads,
    timed,
    write_results,
)

from sklearn_north.datasets import load_mnist
from sklearn_north.growth import ActivationTrigger, GrowthContext
from sklearn_north.growth.activations import ActivationRecorder
from sklearn_north.nn import GrowableMLP

#: (hidden widths, what ends there): the NORTH* strategies' final widths on MNIST.
CONFIGS = [
    ((784, 85), "north-random, north-select (first layer at its maximum)"),
    ((784, 491), "north-select, seed 1 (exact mode)"),
    ((390, 90), "north-pre (both layers watched)"),
]


def measure(widths, X, y, buffer, rounds, max_width=784, device="cpu"):
    torch.manual_seed(0)
    net = GrowableMLP(X.shape[1], widths, 10, max_hidden_layer_sizes=(max_width,) * 2)
    net.to(device)
    X, y, buffer = X.to(device), y.to(device), buffer.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4)
    trigger = ActivationTrigger()
    trigger.initialize(net.growth_sites(), GrowthContext(net, buffer))
    sites = [(i, s) for i, s in enumerate(net.growth_sites()) if s.room > 0]
    # Fast mode's rings, seeded with the buffer as the callback does; hooks on only for
    # the fast step.
    recorder = ActivationRecorder(len(buffer)).attach(net.growth_sites())
    recorder.fill(GrowthContext(net, buffer).activations_all())
    recorder.detach()

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()

    def evaluate(context):
        for index, site in sites:
            trigger(index, site, context)

    def one_round():
        static = timed(device, step)
        # A fresh context computes the buffer's activations inside ``evaluate``.
        exact = timed(device, evaluate, GrowthContext(net, buffer))
        recorder.attach(net.growth_sites())
        fast = timed(device, step) + timed(device, evaluate, GrowthContext(net, recorder=recorder))
        recorder.detach()
        return static, exact, fast

    for _ in range(5):  # warm-up
        one_round()
    times = np.array([one_round() for _ in range(rounds)])
    return {
        "step_ms": 1e3 * np.median(times[:, 0]),
        "exact_ms": 1e3 * np.median(times[:, 1]),
        "fast_step_ms": 1e3 * np.median(times[:, 2]),
        "watched_layers": len(sites),
        "exact_floor": np.median((times[:, 0] + times[:, 1]) / times[:, 0]),
        "fast_floor": np.median(times[:, 2] / times[:, 0]),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=60, help="alternating rounds (60)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    p.add_argument("--data-home", default=default_data_home(), help="MNIST IDX files")
    add_device_option(p)
    p.add_argument("--out", default=None, help="results name (step_costs, _cuda on CUDA)")
    args = p.parse_args()
    out = args.out or "step_costs" + ("_cuda" if is_cuda(args.device) else "")
    set_threads(args.threads)
    X, y = load_mnist(args.data_home, subset="train", return_X_y=True)
    # Disjoint images: the training batch, then a full buffer (2 x the maximum width).
    batch = torch.from_numpy(X[:512])
    labels = torch.from_numpy(y[:512])
    buffer = torch.from_numpy(X[512 : 512 + 2 * 784])
    rows = []
    for widths, where in CONFIGS:
        row = {"widths": "-".join(map(str, widths)), "strategies ending there": where}
        row.update(measure(widths, batch, labels, buffer, args.rounds, device=args.device))
        rows.append(row)
        print(row)
    df = pd.DataFrame(rows)
    text = "\n".join(
        [
            "# One training step vs one growth evaluation (MNIST, batch 512, buffer 1568)",
            "",
            f"`{command_line('bench_step_costs.py')}`",
            "",
            f"{environment(args.device)}; on {args.device}. Medians of {args.rounds} "
            "alternating rounds. `exact`: the "
            "activation trigger on the buffer's activations recomputed with the current "
            "weights (every layer below its maximum, 784); `fast step`: the training step "
            "with fast mode's recording hooks, then the same trigger calls on the rows they "
            "kept (the Gram formed only for the rows written since the last step). "
            "`exact floor` = (step + exact) / step and `fast floor` = fast step / step: the "
            "growing / static time ratio of a fit that stays at these widths, growth events "
            "and the callback's bookkeeping left out.",
            "",
            markdown_table(df, floatfmt=".2f", index=False),
            "",
        ]
    )
    write_results(df, text, out)


if __name__ == "__main__":
    main()
