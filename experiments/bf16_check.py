"""bf16 autocast against float32 on a trained model: validation NLL and training loss per molecule, same weights and
noise (the figures of experiments/results/throughput.md, "bf16 autocast against float32").

    OMP_NUM_THREADS=1 python experiments/bf16_check.py CKPT     # CKPT: e.g. the quickstart run's last.ckpt
"""

import sys

import torch

from gaga.config import DATA_DIR
from gaga.data.datamodule import MoleculeDataModule
from gaga.data.qm9 import QM9
from gaga.models.checkpoints import load_model

model = load_model(sys.argv[1])
data = MoleculeDataModule(QM9(DATA_DIR), batch_size=128, subset={"train": 4096, "valid": 256, "test": 256})
data.setup("fit")
runs = {False: ([], []), True: ([], [])}
for i, batch in enumerate(data.val_dataloader()):
    for bf16, (nll, loss) in runs.items():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            nll.append(model.nll_terms(batch, torch.Generator().manual_seed(i))["nll"])
            loss.append(model.training_terms(batch, torch.Generator().manual_seed(i))["loss"])
for k, name in enumerate(("NLL", "loss")):
    fp32, bf16 = torch.cat(runs[False][k]), torch.cat(runs[True][k])
    relative = (bf16 - fp32).abs() / fp32.abs()
    print(
        f"{name}: mean {fp32.mean():.4f} (float32) {bf16.mean():.4f} (bf16), largest |difference| "
        f"{(bf16 - fp32).abs().max():.4f}, largest relative {relative.max() * 2**8:.2f} u, "
        f"mean relative {float((bf16.mean() - fp32.mean()) / fp32.mean()):.1e}"
    )
