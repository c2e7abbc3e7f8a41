"""Where the growth engine's small factorisations run faster: GPU solver or host CPU.

The metric factorises a layer's float64 Gram (LDL^T), NORTH-Pre an input Gram (eigh) and
a block's column space (SVD, QR), at the widths of the paper (64-784). For each
operation and width this times it on the GPU and as the engine runs it on a GPU
(``growth/_host.py``: copy to the host, factorise there), side by side, alternating, and
prints the medians and their ratio. Needs a CUDA device.

    python benchmarks/bench_linalg_device.py

Writes ``benchmarks/results/linalg_device.csv`` and ``.md``.
"""

import argparse

import numpy as np
import pandas as pd
import torch
from _common import command_line, environment, markdown_table, timed, write_results

from sklearn_north.growth.metrics import gram

OPERATIONS = {
    "ldl_factor (metric)": lambda G, B: torch.linalg.ldl_factor_ex(G),
    "eigh (north-pre)": lambda G, B: torch.linalg.eigh(G),
    "svdvals (column space)": lambda G, B: torch.linalg.svdvals(B),
    "qr (column space)": lambda G, B: torch.linalg.qr(B),
    "cholesky (select scoring)": lambda G, B: torch.linalg.cholesky(G),
}


def measure(width, rounds, device, n=1568):
    g = torch.Generator().manual_seed(width)
    H = torch.relu(torch.randn(n, width, generator=g)).to(device)
    G = gram(H)
    G.diagonal().add_(1e-3)  # positive definite, for the Cholesky
    B = torch.randn(min(n, 2 * width), width, dtype=torch.float64, generator=g).to(device)
    rows = []
    for name, op in OPERATIONS.items():

        def on_gpu(op=op):
            op(G, B)

        def on_host(op=op):
            result = op(G.cpu(), B.cpu())
            # The engine uses the result on the device: bring the first output back.
            (result[0] if isinstance(result, tuple) else result).to(device)

        for _ in range(3):
            on_gpu(), on_host()
        times = np.array([(timed(device, on_gpu), timed(device, on_host)) for _ in range(rounds)])
        gpu, cpu = 1e3 * np.median(times, axis=0)
        rows.append({"operation": name, "width": width, "gpu_ms": gpu, "host_ms": cpu,
                     "gpu / host": gpu / cpu})  # fmt: skip
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--widths", type=int, nargs="+", default=[85, 390, 491, 784])
    p.add_argument("--out", default="linalg_device")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_linalg_device.py needs a CUDA device.")
    rows = [r for w in args.widths for r in measure(w, args.rounds, args.device)]
    df = pd.DataFrame(rows)
    text = "\n".join(
        [
            "# Small factorisations: GPU solver vs host CPU (copy included)",
            "",
            f"`{command_line('bench_linalg_device.py')}`",
            "",
            f"{environment(args.device)}. Float64, medians of {args.rounds} alternating "
            "rounds. `host_ms`: copy the operand to the host, factorise there, copy the "
            "first result back (what `growth/_host.py` does); `gpu_ms`: the same operation "
            "on the device. Operands: the Gram of a 1568 x width ReLU block (+1e-3 I), "
            "and a (2 x width) x width block for the column space.",
            "",
            markdown_table(df, floatfmt=".2f", index=False),
            "",
        ]
    )
    write_results(df, text, args.out)


if __name__ == "__main__":
    main()
