#!/usr/bin/env bash
# One prepared command for a CUDA machine: the same benchmark as on the CPU, on a randomly initialized
# model of BERT-base's shape (12 layers, 768 hidden, 3072 FFN, 30522 tokens: no weights needed), in
# bfloat16 and float32. Prints the benchmark JSON; projected_full_ffn_sweep_s is the projected time
# for all 12 x 3072 = 36,864 FFN neurons with that run's settings, vocabulary scans included; the
# "precision" block compares bf16 and TF32 against float32 beside the seed-to-seed variation.
#
#   bash benchmarks/gpu_bench.sh                      # needs python3 with torch (CUDA), transformers, pyarrow
#   bash benchmarks/gpu_bench.sh --device cuda:1      # another GPU
#   bash benchmarks/gpu_bench.sh --tiny --device cpu  # a seconds-long smoke run of the same script (bundled model)
#
# It uses the machine's python3 (or $PYTHON); neurotext itself is taken from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PYTHON:-python3}
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#--device=}"; shift ;;
    --tiny) TINY=1; shift ;;
    *) echo "gpu_bench.sh: unknown argument $1 (use --device auto|cpu|cuda|cuda:N, --tiny)" >&2; exit 2 ;;
  esac
done
if [ "$TINY" = 1 ]; then
  exec "$PY" benchmarks/bench_textualize.py --quick --skip-long --device "$DEVICE" --json
fi
case "$DEVICE" in
  cuda*) "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" >&2 ;;
esac
for dtype in float32 bfloat16; do
  extra=()
  [ "$dtype" = bfloat16 ] && extra=(--skip-precision)  # the float32 run already compared bf16 and TF32
  "$PY" benchmarks/bench_textualize.py --random-model bert-base --device "$DEVICE" --json "${extra[@]}" \
      --engine-per-layer 3072 --engine-config "batch_size=65536,dtype=$dtype" --long-steps 1000 --long-restarts 8
done
