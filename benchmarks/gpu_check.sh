#!/usr/bin/env bash
# One GPU check for the CNN path (issue 20), within 9 minutes:
#
#   1. the machine: nvidia-smi, torch and its CUDA device;
#   2. python -m pytest tests/test_cuda.py -q -x;
#   3. VGG-11, then WRN-28, at CIFAR shapes (bench_cnn.py --mode cifar): every growing
#      strategy, 1 seed, 3 epochs on 5000 images, each growing fit followed by its static
#      twin, for the issue's ratios (growing / static median epoch time <= 1.3; WRN-28:
#      growing / static peak GPU memory <= 1.5). On random images with random labels
#      (--synthetic: ratios only, accuracies are chance) unless CIFAR_HOME names a folder
#      holding cifar-10-batches-py (or its archive);
#   4. the ratios of every run, read back from the CSVs (also those a timeout cut short).
#
# Each step runs under `timeout`. Results: $RESULTS_DIR/cnn_check_{vgg11,wrn28}_<data>_cuda.*
# Exit status: 1 if the CUDA tests fail (or torch sees no CUDA device), else 2 if a
# benchmark step fails or times out, else 0.
#
#   bash benchmarks/gpu_check.sh
#   DEVICE=cpu bash benchmarks/gpu_check.sh   # tiny version of every step, no GPU needed
#
# Environment: DEVICE (cuda; cpu: the same steps on a few images, to test this script on
# a machine without a GPU), PYTHON (python), RESULTS_DIR (benchmarks/results), CIFAR_HOME,
# GPU_CHECK_TESTS (tests/test_cuda.py and the CUDA case of the conv GradMax gradient test;
# several paths separated by spaces).
set -u
cd "$(dirname "$0")/.." || exit 2

DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python}
RESULTS_DIR=${RESULTS_DIR:-benchmarks/results}
read -r -a TESTS <<< "${GPU_CHECK_TESTS:-tests/test_cuda.py tests/test_conv_gradmax.py::test_auxiliary_gradient_equals_autograd_on_explicit_zero_channels}"
START=$SECONDS

if [ "$DEVICE" = cpu ]; then
    # The logic of every step on a few images; results named _cpu, not _cuda.
    SUFFIX=_cpu
    SIZE=(--seeds 1 --epochs 1 --n-train 40 --n-test 20 --batch-size 20
          --widths 0.125 --max-widths 0.25 --threads 1)
    STRATEGIES=(north-weight gradmax)
else
    SUFFIX=_cuda
    SIZE=(--seeds 1 --epochs 3 --n-train 5000 --n-test 1000)
    STRATEGIES=(north-select gradmax north-weight north-random)
fi
if [ -n "${CIFAR_HOME:-}" ]; then
    DATA=(--data-home "$CIFAR_HOME")
    DATA_NAME=cifar10
else
    DATA=(--synthetic)
    DATA_NAME=synthetic
fi

# step NAME SECONDS COMMAND...: run COMMAND under a time limit, report its exit status.
step() {
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo
    echo "=== $name (at most ${limit} s, at $((SECONDS - START)) s): $*"
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "=== $name: TIMED OUT after $limit s"
    fi
    echo "=== $name: exit status $rc after $((SECONDS - t0)) s"
    return $rc
}

echo "=== gpu_check.sh: DEVICE=$DEVICE, data: $DATA_NAME, results in $RESULTS_DIR"
if command -v nvidia-smi >/dev/null; then
    step "nvidia-smi" 30 nvidia-smi
else
    echo "(no nvidia-smi on this machine)"
fi

step "torch" 60 "$PYTHON" - "$DEVICE" <<'EOF'
import sys

import torch

device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, {torch.get_num_threads()} threads")
print(f"torch.cuda.is_available(): {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
          f"capability {props.major}.{props.minor}")
if device != "cpu" and not torch.cuda.is_available():
    sys.exit(f"DEVICE={device}, but torch sees no CUDA device: the CUDA tests would only skip.")
EOF
if [ $? -ne 0 ]; then
    echo "=== gpu_check.sh: FAILED (no usable torch/CUDA)"
    exit 1
fi

tests_rc=0
step "CUDA tests" 150 "$PYTHON" -m pytest "${TESTS[@]}" -q -x -p no:cacheprovider || tests_rc=$?

bench_rc=0
OUTS=()
for arch in vgg11 wrn28; do
    out=cnn_check_${arch}_${DATA_NAME}${SUFFIX}
    OUTS+=("$out")
    limit=150
    [ "$arch" = wrn28 ] && limit=165
    step "$arch at CIFAR shapes" $limit "$PYTHON" benchmarks/bench_cnn.py --mode cifar \
        --architecture "$arch" "${DATA[@]}" --device "$DEVICE" "${SIZE[@]}" \
        --strategies "${STRATEGIES[@]}" --results-dir "$RESULTS_DIR" --out "$out" \
        || bench_rc=$?
done

# The ratios from the CSVs: written after every run, so a step cut short still shows
# the runs it finished.
step "ratios" 30 "$PYTHON" - "$RESULTS_DIR" "${OUTS[@]}" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

folder, names = Path(sys.argv[1]), sys.argv[2:]
columns = ["architecture", "dataset", "strategy", "widths", "epochs", "epoch_ratio",
           "memory_ratio", "time_ratio", "peak_mib", "static_peak_mib", "fit_s",
           "static_fit_s"]
for name in names:
    path = folder / f"{name}.csv"
    if not path.exists():
        print(f"{name}: no runs finished")
        continue
    df = pd.read_csv(path)
    print(f"{name}: {len(df)} run(s) on {df['device'].iloc[0]}; {df['machine'].iloc[0]}")
    print(df[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
EOF

echo
echo "=== gpu_check.sh: $((SECONDS - START)) s in all; CUDA tests exit status $tests_rc," \
    "benchmarks $bench_rc"
if [ $tests_rc -ne 0 ]; then
    echo "=== gpu_check.sh: FAILED (CUDA tests)"
    exit 1
fi
if [ $bench_rc -ne 0 ]; then
    echo "=== gpu_check.sh: FAILED (a benchmark step)"
    exit 2
fi
echo "=== gpu_check.sh: OK"
