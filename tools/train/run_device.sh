#!/bin/bash
# The one GPU run: train for MINUTES (default 7), then evaluate the best checkpoint in fp32 and print
# sample generations. Run from the repository root on the GPU machine, with the prepared data in
# tools/train/_data (tokenizer.json, tokenizer_config.json, train.tokens.npy, heldout.tokens.npy,
# heldout.txt). Results go to $OUT (at most 8 files come back from the device tool, so the small
# files are packed into meta.tar and the safetensors shards are copied beside it).
#   OUT=/some/dir tools/train/run_device.sh [MINUTES [TRAIN_ARGS...]]
# TRAIN_ARGS go to train.py as they are (e.g. --max-tokens 22e6 --eval-seconds 15).
set -u
MINUTES=${1:-7}
RUN=/tmp/v4-default-run
OUT=${OUT:?set OUT to the folder for the results}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
rm -rf "$RUN" && mkdir -p "$RUN"
nvidia-smi -L
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# Training stops itself after MINUTES plus a final evaluation; the timeout is only a guard.
timeout $(( ${MINUTES%.*} * 60 + 150 )) "$PY" tools/train/train.py --data tools/train/_data --out "$RUN" \
  --minutes "$MINUTES" "${@:2}" 2>&1 | grep -v "Writing model shards" | tee "$RUN/train_stdout.log"

timeout 120 "$PY" tools/train/eval_ppl.py --model "$RUN/model" --text tools/train/_data/heldout.txt \
  --generate --new-tokens 60 2>&1 | grep -v "Loading weights" | tee "$RUN/eval_gpu.log"

(cd "$RUN" && tar cf "$OUT/meta.tar" model/*.json train_log.jsonl train_stdout.log eval_gpu.log && \
  cp model/*.safetensors "$OUT/")
ls -la "$OUT"
