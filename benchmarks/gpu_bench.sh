#!/usr/bin/env bash
# One prepared command for a CUDA machine: the same benchmark as on the CPU, on a randomly initialized
# model of BERT-base's shape (12 layers, 768 hidden, 3072 FFN, 30522 tokens: no weights needed), in
# bfloat16 and float32. Prints the benchmark JSON; projected_full_ffn_sweep_s is the projected time
# for all 12 x 3072 = 36,864 FFN neurons with that run's settings, vocabulary scans included.
#
#   bash benchmarks/gpu_bench.sh            # needs python3 with torch (CUDA), transformers, pyarrow
#
# It uses the machine's python3 (which must hold a CUDA torch); neurotext itself is taken from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PYTHON:-python3}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" >&2
for dtype in float32 bfloat16; do
  "$PY" benchmarks/bench_textualize.py --random-model bert-base --device cuda --json \
      --engine-per-layer 3072 --engine-config "batch_size=65536,dtype=$dtype" --long-steps 1000 --long-restarts 8
done
