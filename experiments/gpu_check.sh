#!/usr/bin/env bash
# All GPU figures of issue 11 in one command (estimated 8 min on an H100, at most 15 with every part at its timeout;
# run from the repo root; tables under $OUT):
#   training throughput at batch 64 and 256: EDM's reference code, gaga eager float32, +bf16, +bf16+compile
#   (bench_train.md, with a profile of eager and bf16+compile at batch 64: top operators, kernel launches per
#   step) and gaga before issue 11 on the same batches (before_train.md); sampling at batch 100 and 500
#   from T = 1000 and T* = 550, ancestral and DDIM stride 2: EDM's code, gaga eager float32 and bf16+compile
#   (bench_sample.md; whole chains for bf16+compile at batch 100, the rest projected from 25 and 50 transitions) and
#   gaga before (before_sample.md); two short EDM + GAGA training runs (200 steps at batch 256), float32 and
#   bf16-mixed, with their validation NLL on 2,048 molecules (train_*.txt). Each part prints its rows as it goes.
# Needs, carried to the GPU machine (git-ignored paths): data/ (the QM9 cache: python -m gaga.data build qm9), .whl/
# (wheels of gaga's pure-Python dependencies, installed without network), experiments/edm_reference/ (EDM's code:
# see experiments/bench_edm.py; its column is skipped, saying so, without it) and experiments/gaga_before/ (gaga at
# commit 787a797, made here with git archive when .git is present; skipped, saying so, without it).
# PARTS picks parts (default: all, "train before sample runs"); every part ends at its timeout, so the parts fit a
# 10-minute command in two calls when a GPU is slow: PARTS="train before" (<= 450 s), then PARTS="sample runs" (<= 440 s).
# TINY=1 shrinks every figure (network 32 x 2, a few steps and molecules) to check the script on a CPU in minutes.
set -uo pipefail
OUT=${OUT:-outputs/gpu_check}
BEFORE=$(realpath -m "${GAGA_BEFORE:-experiments/gaga_before}")
BEFORE_COMMIT=787a797
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
SITE=$([ -d /tmp/site ] && echo /tmp/site || true)
export PYTHONPATH=$PWD${SITE:+:$SITE} PYTHONUNBUFFERED=1
clock=$SECONDS
part() { echo "== $1 ($((SECONDS - clock)) s so far)"; }
PARTS=" ${PARTS:-train before sample runs} "
wants() { [[ $PARTS == *" $1 "* ]]; }
keep() { grep -v -E "Warning|warn\(|self.log\(\)|^\s*$"; }

if [ "${TINY:-0}" = 1 ]; then
  NET="--hidden 32 --layers 2"
  TRAIN_BENCH="$NET --batch-sizes 8 16 --steps 2 --warmup 1"
  SAMPLE_BENCH="$NET --batch-sizes 4 8 --starts 20 10 --transitions 3"
  RUN="experiment=quickstart trainer=cpu data.subset.train=256 data.subset.valid=64 trainer.limit_train_batches=3"
  RUN="$RUN backbone.net.hidden_nf=32 backbone.net.n_layers=2 gaga.t_star=550"
else
  TRAIN_BENCH="--batch-sizes 64 256 --steps 15 --warmup 3"
  SAMPLE_BENCH="--batch-sizes 100 500 --starts 1000 550 --transitions 25"
  RUN="experiment=edm_gaga_qm9 trainer=gpu data.subset.valid=2048 trainer.limit_train_batches=200"
fi
TRAIN_ARMS="edm-ref eager bf16 bf16+compile"
SAMPLE_ARMS="edm-ref eager bf16+compile"

part "device"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU: CPU run") \
  | tee "$OUT/gpu.txt"

if wants train; then
  part "training throughput"
  timeout 270 python3 experiments/bench_train.py $TRAIN_BENCH --arms $TRAIN_ARMS --profile eager bf16+compile 2>&1 | keep \
    | tee "$OUT/bench_train.md"
fi

if wants before; then
  part "gaga before issue 11 ($BEFORE): the same benchmarks and batches on its code, eager float32"
  if [ ! -d "$BEFORE/gaga" ] && git rev-parse -q --verify "$BEFORE_COMMIT^{commit}" >/dev/null 2>&1; then
    mkdir -p "$BEFORE" && git archive "$BEFORE_COMMIT" | tar -x -C "$BEFORE"
  fi
  if [ -d "$BEFORE/gaga" ]; then
    ln -sfn "$PWD/data" "$BEFORE/data"
    PYTHONPATH=$BEFORE${SITE:+:$SITE} timeout 90 python3 experiments/bench_train.py $TRAIN_BENCH --arms eager \
      2>&1 | keep | tee "$OUT/before_train.md"
    PYTHONPATH=$BEFORE${SITE:+:$SITE} timeout 90 python3 experiments/bench_sample.py $SAMPLE_BENCH --arms eager \
      2>&1 | keep | tee "$OUT/before_sample.md"
  else
    echo "gaga before issue 11: skipped (no $BEFORE and no commit $BEFORE_COMMIT to make it from)" | tee "$OUT/before.txt"
  fi
fi

if wants sample; then
  part "sampling throughput"
  timeout 240 python3 experiments/bench_sample.py $SAMPLE_BENCH --arms $SAMPLE_ARMS --whole-arms bf16+compile 2>&1 | keep \
    | tee "$OUT/bench_sample.md"
fi

if wants runs; then
  for precision in 32-true bf16-mixed; do
    part "EDM + GAGA training run, trainer.precision=$precision"
    timeout 100 python3 train.py $RUN trainer.precision=$precision trainer.max_epochs=1 trainer.check_val_every_n_epoch=1 \
      logger=csv '~callbacks.sample_quality' paths.log_dir="$OUT/runs" 2>&1 | grep -v -E "Warning|^\s*$" | tail -12 \
      | tee "$OUT/train_$precision.txt"
  done
fi
part "done"
