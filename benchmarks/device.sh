#!/usr/bin/env bash
# The GPU table of issue 23 in one call (benchmarks/table.py): train step and tiled inference of
# SwinIR, HAT, DAT, SPAN, RealPLKSR, Omni-SR, RCAN, ESRGAN, EDSR and SRVGGNetCompact in bf16, against
# PyTorch eager and torch.compile, written to benchmarks/results/<device>_table.json.
#   bash benchmarks/device.sh             # on a GPU machine (the device tool's pip line first)
#   bash benchmarks/device.sh --dry-run   # tiny sizes on the CPU: every call checked, in minutes
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  exec python benchmarks/table.py --dry-run --precision fp32 --torch-compile 0 --json "${OUT:-/tmp}/dry_run_table.json" "$@"
fi
device=$(python -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
exec python benchmarks/table.py --json "benchmarks/results/${device}_table.json" "$@"
