#!/usr/bin/env bash
# GPU measurements in one go (run on a GPU machine from the repo root; $OUT collects the logs):
# training throughput of the published EDM network, sampling time at T and T*, and a short real EDM + GAGA run.
# Needs the QM9 cache in data/ (python -m gaga.data build qm9) and, where Hydra is missing, wheels in .whl/.
set -uo pipefail
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 experiments/bench_train.py --steps 30 2>&1 | grep -v Warning | tee "$OUT/bench_train.txt"
python3 experiments/bench_sample.py --molecules 200 --batch-size 100 --starts 1000 550 2>&1 | grep -v Warning \
  | tee "$OUT/bench_sample.txt"
timeout "${TRAIN_SECONDS:-240}" python3 train.py experiment=edm_gaga_qm9 trainer=gpu gaga.t_star=auto \
  trainer.max_epochs="${TRAIN_EPOCHS:-3}" trainer.check_val_every_n_epoch=1 data.subset.valid=2048 \
  '~callbacks.sample_quality' callbacks.progress_bar.refresh_rate=100 paths.log_dir="$OUT/runs" 2>&1 \
  | grep -v -E "Warning|^\s*$" | tail -40 | tee "$OUT/train_edm_gaga_qm9.txt"
