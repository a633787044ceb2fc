#!/usr/bin/env bash
# Does a refactor leave EDM's quickstart figures unchanged? Trains `experiment=quickstart` (make demo's training) at
# two commits, samples 100 molecules from each run's last.ckpt, and samples the first commit's checkpoint with the
# second commit's code; then compares the epoch lines, T*, the weights and the sample metrics.
#
#   bash experiments/quickstart_across_commits.sh BEFORE AFTER [WORKDIR]
#
# Each commit runs from its own worktree under WORKDIR (default: a new temporary folder) with its own data cache, on
# one thread (13 minutes per commit, training and sampling, on the 2-core machine beside other jobs). A step whose
# output exists in WORKDIR is not redone.
# Afterwards: git worktree remove --force WORKDIR/tree_before WORKDIR/tree_after.
set -euo pipefail
before=$1
after=$2
work=$(realpath -m "${3:-$(mktemp -d)}")
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
python=${PYTHON:-$repo/.venv/bin/python}
mkdir -p "$work"

in_tree() {  # in_tree TAG COMMAND...: run in TAG's worktree with its own code and data cache, on one thread
  local tag=$1
  shift
  local commit=$before
  [[ $tag == after ]] && commit=$after
  [[ -d $work/tree_$tag ]] || git -C "$repo" worktree add -q --detach "$work/tree_$tag" "$commit"
  (cd "$work/tree_$tag" && GAGA_DATA_DIR=$work/data_$tag PYTHONPATH=$work/tree_$tag OMP_NUM_THREADS=1 "$@")
}

sample() {  # sample TAG CHECKPOINT FOLDER
  [[ -f $3/metrics.json ]] || in_tree "$1" "$python" sample.py "ckpt=$2" n_samples=100 strain_molecules=0 \
    pictures=0 "hydra.run.dir=$3" > "$3.log" 2>&1
}

for tag in before after; do
  [[ -f $work/qs_$tag/checkpoints/last.ckpt ]] || in_tree "$tag" "$python" train.py experiment=quickstart \
    "hydra.run.dir=$work/qs_$tag" > "$work/qs_$tag.train.log" 2>&1
  sample "$tag" "$work/qs_$tag/checkpoints/last.ckpt" "$work/qs_${tag}_sample"
done
sample after "$work/qs_before/checkpoints/last.ckpt" "$work/qs_cross_sample"

"$python" - "$work" <<'EOF'
import json
import re
import sys
from pathlib import Path

import torch

work = Path(sys.argv[1])
TIMINGS = {"checkpoint", "sampling_seconds", "seconds_per_molecule", "molecules_per_second"}


def training(tag):
    """T*, train/loss per epoch and val/nll per validation (earlier epoch lines repeated the last val/nll)."""
    text = (work / f"qs_{tag}.train.log").read_text(errors="replace")
    nll = [float(v) for v in re.findall(r"epoch \d+/\d+ .*?val/nll (\S+)", text)]
    return {
        "T*": re.findall(r"GAGA: T\* = (.*)", text),
        "train/loss": [float(v) for v in re.findall(r"epoch \d+/\d+\s+train/loss (\S+)", text)],
        "val/nll": [v for i, v in enumerate(nll) if i == 0 or v != nll[i - 1]],
    }


def differences(a, b):
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in TIMINGS and a.get(k) != b.get(k)}


def metrics(folder):
    return json.loads((work / folder / "metrics.json").read_text())


print("training, before:", training("before"))
print("training equal:", training("before") == training("after"))
weights = [torch.load(work / f"qs_{t}" / "checkpoints" / "last.ckpt", weights_only=True) for t in ("before", "after")]
states = [w["state_dict"] for w in weights]
unequal = [k for k in states[0] if k not in states[1] or not torch.equal(states[0][k], states[1][k])]
print(f"weights: {len(states[0])} tensors, {len(unequal)} differ")
headline = ("atom_stability", "mol_stability", "validity", "valid_x_unique", "num_fragments", "w1_num_atoms")
print("before's checkpoint, before's code:", {k: round(metrics("qs_before_sample")[k], 4) for k in headline})
print("before's checkpoint, after's code differs in:", differences(metrics("qs_before_sample"), metrics("qs_cross_sample")))
print("each run's own checkpoint differs in:", differences(metrics("qs_before_sample"), metrics("qs_after_sample")))
dataset = [w["hyper_parameters"]["dataset"] for w in weights]
print("p(N) molecules in the checkpoints:", [sum(d["num_atoms_hist"].values()) for d in dataset])
EOF
