"""What one NORTH-Pre growth event costs against the width of the layer's input.

A first hidden layer of ``--width`` neurons on ``d`` Gaussian input features, ``n``
buffered samples. For each ``(n, d)`` this times one growth event (``--k`` neurons from
``--candidates`` candidates) of

- ``pre``: ``PreActivationInit`` as it runs: the features' ``(d + 1)^2`` input Gram when
  ``n >= d + 1``, the samples' ``n x n`` Gram otherwise;
- ``select``: ``SelectInit`` on the same layer and buffer (the reference cost: it draws and
  scores ``candidates x d`` weights);
- ``full_gram``: ``PreActivationInit`` forced onto the features' Gram where ``n < d + 1``
  (the only path before the sample-space one), for ``d <= --full-gram-max``: its
  eigendecomposition is cubic in ``d``.

Each event gets a fresh ``GrowthContext`` whose activations and post-activation Gram are
formed before the clock starts (in a fit the trigger has formed them in the same
evaluation); the input Gram is the initializer's own work and is timed. Times are the
median of up to ``--repeats`` events, fewer where the events of one configuration have
taken ``--budget`` seconds, after one untimed event of each kind. ``pre_max_cos`` is the
largest |cosine| between a new neuron's pre-activation (with its bias) and an existing
one on the buffer: 0 up to float32 rounding in both paths.

    python benchmarks/bench_pre_scaling.py
    python benchmarks/bench_pre_scaling.py --samples 300 1568 --threads 1

Writes ``benchmarks/results/pre_scaling.csv`` and ``benchmarks/results/pre_scaling.md``.
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch
from _common import command_line, environment, markdown_table, set_threads, write_results

from sklearn_north.growth import GrowthContext, PreActivationInit, SelectInit
from sklearn_north.nn import GrowableMLP


def full_gram_pre(n_candidates):
    """``PreActivationInit`` on the features' ``(d + 1)^2`` Gram whatever the shape."""
    init = PreActivationInit(n_candidates=n_candidates)
    init._sample_space = False
    return init


def event(init, module, X, k, seed=0):
    """Seconds one growth event of site 0 takes, and the new neurons."""
    context = GrowthContext(module, X)
    context.activations_all()
    context.post_gram(0)
    site = module.growth_sites()[0]
    tic = time.perf_counter()
    new = init(0, site, k, context, torch.Generator().manual_seed(seed))
    return time.perf_counter() - tic, new


def timed_events(init, module, X, k, repeats, budget):
    """Median seconds of up to ``repeats`` events (fewer once ``budget`` s are spent),
    the number of events, and the last event's new neurons."""
    times = []
    while len(times) < repeats and sum(times) < budget:
        seconds, new = event(init, module, X, k, seed=len(times))
        times.append(seconds)
    return float(np.median(times)), len(times), new


def max_cosine(module, X, new):
    """Largest |cos| between a new neuron's pre-activation and an existing one on X."""
    Z_old = module.site_activations(X)[0].pre.double()
    Z_new = X.double() @ new.fan_in.double().T + new.bias.double()
    cos = (Z_new.T @ Z_old).abs() / (Z_new.norm(dim=0)[:, None] * Z_old.norm(dim=0))
    return float(cos.max())


def measure(n, d, args):
    torch.manual_seed(0)
    module = GrowableMLP(d, (args.width, args.width), 10)
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    sample_space = n < d + 1
    row = {"n": n, "d": d, "path": "samples" if sample_space else "features"}
    pre = PreActivationInit(n_candidates=args.candidates)
    select = SelectInit(n_candidates=args.candidates)
    row["pre_s"], row["pre_events"], new = timed_events(
        pre, module, X, args.k, args.repeats, args.budget
    )
    row["select_s"], row["select_events"], _ = timed_events(
        select, module, X, args.k, args.repeats, args.budget
    )
    row["pre / select"] = row["pre_s"] / row["select_s"]
    row["pre_max_cos"] = max_cosine(module, X, new)
    row["full_gram_s"] = row["full_gram_events"] = row["full_gram / pre"] = np.nan
    if sample_space and d <= args.full_gram_max:
        full, events, new = timed_events(
            full_gram_pre(args.candidates), module, X, args.k, args.repeats, args.budget
        )
        row.update({"full_gram_s": full, "full_gram_events": events})
        row["full_gram / pre"] = full / row["pre_s"]
        row["full_gram_max_cos"] = max_cosine(module, X, new)
    return row


def warm_up(args):
    """One untimed event of each kind, so one-off costs (thread pools, LAPACK's first
    calls) are not charged to the first configuration."""
    torch.manual_seed(0)
    module = GrowableMLP(16, (args.width,) * 2, 10)
    for n in (8, 64):
        X = torch.randn(n, 16)
        for init in (
            PreActivationInit(n_candidates=args.candidates),
            SelectInit(n_candidates=args.candidates),
        ):
            event(init, module, X, args.k)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 784, 4000, 10000],
                   help="input widths d (64 784 4000 10000)")  # fmt: skip
    p.add_argument("--samples", type=int, nargs="+", default=[300], help="samples n (300)")
    p.add_argument("--width", type=int, default=64, help="neurons of the growing layer (64)")
    p.add_argument("--k", type=int, default=4, help="neurons added per event (4)")
    p.add_argument("--candidates", type=int, default=1000, help="n_candidates (1000)")
    p.add_argument("--repeats", type=int, default=5, help="events per configuration (5)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="stop repeating a configuration after this many seconds (20)")  # fmt: skip
    p.add_argument("--full-gram-max", type=int, default=4000,
                   help="time the features' Gram path (n < d + 1) up to this d (4000)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    p.add_argument("--out", default="pre_scaling", help="results name (pre_scaling)")
    args = p.parse_args()
    set_threads(args.threads)
    warm_up(args)
    tic = time.perf_counter()
    rows = []
    for n in args.samples:
        for d in args.widths:
            rows.append(measure(n, d, args))
            print({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in rows[-1].items()})
    df = pd.DataFrame(rows)
    shown = df[["n", "d", "path", "pre_s", "select_s", "pre / select", "full_gram_s",
                "full_gram / pre", "pre_max_cos"]]  # fmt: skip
    text = "\n".join(
        [
            "# One NORTH-Pre growth event against the input width",
            "",
            f"`{command_line('bench_pre_scaling.py')}`",
            "",
            f"{environment()}; the whole run took {time.perf_counter() - tic:.0f} s. "
            f"A first hidden layer of {args.width} neurons on d Gaussian features, n "
            f"buffered samples; one event adds {args.k} neurons out of {args.candidates} "
            f"candidates. Seconds per event, the median of up to {args.repeats} events "
            f"(fewer past {args.budget:g} s; see the CSV's `*_events`). `path`: the Gram "
            "matrix `pre` decomposes (`features`: (d + 1)^2, `samples`: n x n, used when "
            "n < d + 1). `select`: NORTH-Select on the same layer and buffer. "
            "`full_gram`: NORTH-Pre forced onto the features' Gram (the only path before "
            f"the sample-space one), where n < d + 1 and d <= {args.full_gram_max}. "
            "`pre_max_cos`: the largest |cosine| between a new neuron's pre-activation and "
            "an existing one (orthogonal up to float32 rounding). Indicative: the 2 cores "
            "may be shared with other processes.",
            "",
            markdown_table(shown, floatfmt=".3g", index=False),
            "",
        ]
    )
    write_results(df, text, args.out)


if __name__ == "__main__":
    main()
