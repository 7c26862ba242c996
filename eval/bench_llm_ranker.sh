#!/usr/bin/env bash
# First real measurement of the llm_ranker component (issue 28, slice 1): fit on ML-100K with
# popularity, itemknn, als and llm_ranker on ONE thread under a small time budget, then copy the
# bundle's bundle.json and the ranker's learning curve (not the weights) to eval/results/llm-ranker/.
# Usage: eval/bench_llm_ranker.sh [OUT_BUNDLE] (default /tmp/llmr/bundle); DATA_DIR=/path/to/ml-100k.
# CONFIG='{"llm_ranker": {...}}' replaces the ranker's settings (e.g. add "item_tokens": "als", "titles": false,
# "method": "projection" for the soft-item-token variants) and RESULTS=eval/results/<name> keeps each variant apart.
set -euo pipefail
OUT=${1:-/tmp/llmr/bundle}
DATA_DIR=${DATA_DIR:-/work/shared/data/ml-100k}
RESULTS=${RESULTS:-$(dirname "$0")/results/llm-ranker}
CONFIG=${CONFIG:-'{"llm_ranker": {"steps": 200, "batch_size": 4, "eval_every": 20, "eval_users": 40, "max_minutes": 9,
 "history": 10, "tail": 3, "threads": 1, "progress": false}}'}
OMP_NUM_THREADS=1 nice python -m llm_recommender.cli fit --out "$OUT" --dataset ml-100k --data-dir "$DATA_DIR" \
  --components popularity,itemknn,als,llm_ranker --valid-users 60 --threads 1 --config "$CONFIG"
mkdir -p "$RESULTS"
cp "$OUT/bundle.json" "$RESULTS/bundle.json"
cp "$OUT/components/llm_ranker/learning_curve.json" "$RESULTS/learning_curve.json"
