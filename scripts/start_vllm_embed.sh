#!/usr/bin/env bash
# Start the production embedder: mxbai-embed-large served by vLLM (pooling runner) on port
# 8001, registered so that a running memory-service's discovery picks it up on its next
# probe round. The model must be in the registry first (servers run offline):
#
#     memory-service models download mixedbread-ai/mxbai-embed-large-v1 --task embed
#
# Overrides: MODEL (registry id or folder), PORT, MEMORY_SERVICE (the command); any
# arguments are passed to vLLM verbatim, e.g. `scripts/start_vllm_embed.sh --dtype float32`.
# Stop it with `memory-service vllm stop mxbai-embed-large`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODEL="${MODEL:-mixedbread-ai/mxbai-embed-large-v1}"
PORT="${PORT:-8001}"
MEMORY_SERVICE="${MEMORY_SERVICE:-.venv/bin/memory-service}"

exec "$MEMORY_SERVICE" vllm serve \
    --model "$MODEL" \
    --served-model-name mxbai-embed-large \
    --runner pooling \
    --port "$PORT" \
    -- --max-model-len 512 "$@"
