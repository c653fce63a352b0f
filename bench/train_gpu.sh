#!/usr/bin/env bash
# Train a DDPM on one GPU within a wall-clock budget, as one command:
#   BUDGET_S=600 DATASET=mnist OUT=results bash bench/train_gpu.sh
# It measures training throughput with a short probe run, sizes --max_train_steps to fit BUDGET_S seconds of
# training, trains (EMA, bf16, cosine LR), and leaves in $OUT the pipeline folder (as a tar, checkpoints left out),
# the exact command and the training log. WHEELS=dir installs wheels from dir first (for machines without an index).
set -euo pipefail
BUDGET_S=${BUDGET_S:-330}
BATCH=${BATCH:-256}
DATASET=${DATASET:-mnist}
PRESET=${PRESET:-small}
OUT=${OUT:-out}
RUN=${RUN:-/tmp/ddpm-$DATASET}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__)"
probe=$(python3 train_accelerate.py --dataset "$DATASET" --model_preset "$PRESET" --train_batch_size "$BATCH" \
  --max_train_steps 300 --checkpointing_steps 100000 --mixed_precision bf16 --output_dir /tmp/ddpm-probe \
  --overwrite_output_dir --logger none --ddpm_num_inference_steps 10 2>/dev/null | tail -1)
echo "probe: $probe"
rate=$(echo "$probe" | sed -E 's/.*\(([0-9.]+) img\/s\).*/\1/')
steps=$(python3 -c "print(max(100, int(float('$rate') * $BUDGET_S / $BATCH) // 100 * 100))")
echo "training $steps steps at batch $BATCH"
cmd=(python3 train_accelerate.py --dataset "$DATASET" --model_preset "$PRESET" --train_batch_size "$BATCH"
  --max_train_steps "$steps" --learning_rate 4e-4 --lr_warmup_steps 500 --lr_scheduler cosine --use_ema
  --mixed_precision bf16 --checkpointing_steps 2000 --checkpoints_total_limit 1 --output_dir "$RUN"
  --overwrite_output_dir --logger tensorboard --seed 0 --ddpm_num_inference_steps 1000 ${EXTRA_ARGS:-})
echo "${cmd[*]}" > "$OUT/command.txt"
start=$(date +%s)
timeout $((BUDGET_S + 90)) "${cmd[@]}" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 0 || /trained|rror|\*\*\*|  [a-z]/' \
  | tee "$OUT/train.log" || true
echo "wall $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
name=$(basename "$RUN")
tar -C "$(dirname "$RUN")" --exclude="$name/checkpoint-*" --exclude="$name/.tmp-*" -cf "$OUT/$name.tar" "$name"
ls -la "$OUT"
