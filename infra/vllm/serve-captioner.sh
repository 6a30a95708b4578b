#!/usr/bin/env bash
# The caption stage's vLLM server on one GPU box, without Ray (the same settings as
# endpoint.toml / sila.stages.caption.CAPTIONER). Then:
#   sila run caption --lake LAKE --endpoint-url http://127.0.0.1:${PORT:-8000}/v1
set -euo pipefail
MODEL="${MODEL:-Qwen/Qwen3-VL-8B-Instruct}"
exec vllm serve "$MODEL" --port "${PORT:-8000}" \
  --served-model-name captioner \
  --host "${HOST:-127.0.0.1}" \
  --tensor-parallel-size "${TP:-1}" \
  --max-model-len "${MAX_MODEL_LEN:-32768}" \
  --gpu-memory-utilization 0.9 \
  --max-num-seqs 64 \
  --limit-mm-per-prompt '{"image": 16, "video": 0}' \
  --dtype bfloat16
