"""Where a small factorisation runs when the tensors live on a GPU: on the host CPU.

The growth engine factorises matrices of at most a few thousand rows per side. Measured
on an H100 against its host CPU, the copy included (``benchmarks/bench_linalg_device.py``,
results/linalg_device.md), float64, widths 85-784: the LDL^T of the metric (a layer's
Gram) is 3-5x faster on the host (491 wide: 12.8 ms on the GPU, 3.8 ms copied to the
host), and so is the SVD of a matrix whose smaller side is ~100 or less (170 x 85: 3.2
ms on the GPU, 1.1 on the host; GradMax's auxiliary gradient, the gradient trigger's
largest singular value); ``eigh`` (NORTH-Pre's input Gram), QR
and Cholesky are 3-7x faster on the GPU from 390 wide, and stay there with the products.
"""


def host(tensor):
    """``tensor`` on the CPU (the same tensor if it is there already)."""
    return tensor.cpu() if tensor.device.type != "cpu" else tensor
