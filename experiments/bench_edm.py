"""EDM's reference code (ehoogeboom/e3_diffusion_for_molecules) on gaga's batches, for the benchmarks' reference column.

Nothing of EDM's code is copied into gaga: it is imported from a checkout in the git-ignored folder
experiments/edm_reference/ (`git clone https://github.com/ehoogeboom/e3_diffusion_for_molecules
experiments/edm_reference`), and the benchmarks skip its column, saying so, when the folder is absent. The model
is EDM's published QM9 run (README: --nf 256 --n_layers 9 --diffusion_steps 1000 --diffusion_noise_schedule
polynomial_2 --diffusion_noise_precision 1e-5 --diffusion_loss_type l2 --normalize_factors [1,4,10] --lr 1e-4
--ema_decay 0.9999; main_qm9.py's defaults otherwise: attention, tanh, 1 sublayer, norm_constant 1, sum
aggregation with factor 1, charges included, EDM's adaptive gradient clipping). Batches are padded to the batch's
largest molecule as EDM's collate does (training) or to QM9's 29 atoms as EDM's sampler does (sampling).
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch_geometric.utils import to_dense_batch

EDM_DIR = Path(__file__).resolve().parent / "edm_reference"
QM9_MAX_ATOMS = 29  # EDM's dataset_info['max_n_nodes'] for QM9, the size its sampler pads to


def available() -> bool:
    return (EDM_DIR / "equivariant_diffusion" / "en_diffusion.py").is_file()


def skipped_note() -> str:
    return f"EDM reference: skipped ({EDM_DIR} holds no checkout of ehoogeboom/e3_diffusion_for_molecules)"


def edge_mask(node_mask: torch.Tensor) -> torch.Tensor:
    """EDM's collate: all pairs of real atoms of a molecule but the diagonal, as [B * n * n, 1]."""
    pairs = node_mask[:, :, None] & node_mask[:, None, :]
    pairs &= ~torch.eye(node_mask.shape[1], dtype=torch.bool, device=node_mask.device)
    return pairs.reshape(-1, 1).float()


class EDMReference:
    """EDM's EGNN_dynamics_QM9 + EnVariationalDiffusion at the published QM9 settings, with its AdamW, gradient
    clipping and EMA; `train_step` is its train_epoch loop body and `sample` its sampler, on gaga's batches."""

    def __init__(self, num_atoms_hist: dict[int, int], device: torch.device, hidden: int = 256, layers: int = 9):
        with contextlib.redirect_stdout(io.StringIO()):  # EDM prints its schedule and p(N)'s entropy
            self._build(num_atoms_hist, device, hidden, layers)

    def _build(self, num_atoms_hist: dict[int, int], device: torch.device, hidden: int, layers: int) -> None:
        if str(EDM_DIR) not in sys.path:
            sys.path.insert(0, str(EDM_DIR))
        import utils as edm_utils
        from egnn.models import EGNN_dynamics_QM9
        from equivariant_diffusion.en_diffusion import EnVariationalDiffusion
        from equivariant_diffusion.utils import EMA, remove_mean_with_mask
        from qm9 import losses
        from qm9.models import DistributionNodes

        self.device, self.utils, self.losses = device, edm_utils, losses
        self.remove_mean_with_mask = remove_mean_with_mask
        in_node_nf = 5 + 1  # H C N O F one-hot + charge
        dynamics = EGNN_dynamics_QM9(
            in_node_nf=in_node_nf + 1,  # + time
            context_node_nf=0,
            n_dims=3,
            device=device,
            hidden_nf=hidden,
            act_fn=torch.nn.SiLU(),
            n_layers=layers,
            attention=True,
            tanh=True,
            mode="egnn_dynamics",
            norm_constant=1,
            inv_sublayers=1,
            sin_embedding=False,
            normalization_factor=1,
            aggregation_method="sum",
        )
        self.model = EnVariationalDiffusion(
            dynamics=dynamics,
            in_node_nf=in_node_nf,
            n_dims=3,
            timesteps=1000,
            noise_schedule="polynomial_2",
            noise_precision=1e-5,
            loss_type="l2",
            norm_values=[1, 4, 10],
            include_charges=True,
        ).to(device)
        self.model_ema = copy.deepcopy(self.model)
        self.ema = EMA(0.9999)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, amsgrad=True, weight_decay=1e-12)
        self.nodes_dist = DistributionNodes(dict(num_atoms_hist))
        self.gradnorm_queue = edm_utils.Queue()
        self.gradnorm_queue.add(3000)
        self.args = SimpleNamespace(probabilistic_model="diffusion", ode_regularization=1e-3)

    @staticmethod
    def dense(batch) -> dict[str, torch.Tensor]:
        """A PyG batch as EDM's data loader serves it: padded to the largest molecule, with masks."""
        positions, node_mask = to_dense_batch(batch.pos, batch.batch)
        one_hot, _ = to_dense_batch(batch.x.float(), batch.batch)
        charges, _ = to_dense_batch(batch.charges.float().reshape(-1, 1), batch.batch)
        return {
            "positions": positions,
            "one_hot": one_hot,
            "charges": charges,
            "atom_mask": node_mask.float().unsqueeze(2),
            "edge_mask": edge_mask(node_mask),
        }

    def train_step(self, data: dict[str, torch.Tensor]) -> int:
        """One step of EDM's train_epoch on a `dense` batch (moved to the device as its loop does); molecules."""
        data = {key: value.to(self.device) for key, value in data.items()}
        node_mask, edges = data["atom_mask"], data["edge_mask"]
        x = self.remove_mean_with_mask(data["positions"], node_mask)
        h = {"categorical": data["one_hot"], "integer": data["charges"]}
        self.optimizer.zero_grad()
        nll, reg_term, _ = self.losses.compute_loss_and_nll(
            self.args, self.model, self.nodes_dist, x, h, node_mask, edges, None
        )
        loss = nll + self.args.ode_regularization * reg_term
        loss.backward()
        self.utils.gradient_clipping(self.model, self.gradnorm_queue)
        self.optimizer.step()
        self.ema.update_model_average(self.model_ema, self.model)
        nll.item()  # EDM's loop records every step's NLL
        return x.shape[0]

    def sample(self, num_atoms: torch.Tensor, transitions: int = 1000) -> None:
        """EDM's sampler (qm9/sampling.py: molecules padded to 29 atoms) with the EMA model: `transitions` ancestral
        steps and its final p(x, h | z_0), i.e. transitions + 1 network evaluations. EDM samples from T = 1000 only;
        its loop's length is its `T` attribute (which also sets the time grid, not the work per step), so shorter
        chains time it at equal network evaluations."""
        node_mask = torch.arange(QM9_MAX_ATOMS, device=self.device)[None, :] < num_atoms.to(self.device)[:, None]
        model, timesteps = self.model_ema, self.model_ema.T
        model.T = transitions
        try:
            model.sample(len(num_atoms), QM9_MAX_ATOMS, node_mask.float().unsqueeze(2), edge_mask(node_mask), None)
        finally:
            model.T = timesteps


def edm_metrics(molecules) -> dict[str, float]:
    """EDM's own evaluator (qm9/analyze.py check_stability, qm9/rdkit_functions.py BasicMolecularMetrics) on a gaga
    MoleculeSet of QM9 molecules with hydrogens: atom and molecule stability, validity, valid x unique (fractions)."""
    import numpy as np

    if str(EDM_DIR) not in sys.path:
        sys.path.insert(0, str(EDM_DIR))
    from configs.datasets_config import get_dataset_info
    from qm9.analyze import check_stability
    from qm9.rdkit_functions import BasicMolecularMetrics

    info = get_dataset_info("qm9", remove_h=False)
    index = {symbol: i for i, symbol in enumerate(info["atom_decoder"])}
    symbols = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
    pairs, stable_atoms, stable_molecules = [], 0, 0
    for i in range(len(molecules)):
        start, end = molecules.offsets[i], molecules.offsets[i + 1]
        types = np.array([index[symbols[int(z)]] for z in molecules.atomic_numbers[start:end]])
        positions = torch.from_numpy(np.asarray(molecules.positions[start:end], dtype=np.float32))
        molecule_stable, atoms_stable, _ = check_stability(positions, types, info)
        stable_atoms += atoms_stable
        stable_molecules += int(molecule_stable)
        pairs.append((positions, torch.from_numpy(types)))
    metrics = BasicMolecularMetrics(info, dataset_smiles_list=[])  # novelty is not compared
    valid, validity = metrics.compute_validity(pairs)
    return {
        "atom_stability": stable_atoms / len(molecules.atomic_numbers),
        "mol_stability": stable_molecules / len(molecules),
        "validity": validity,
        "valid_x_unique": validity * len(set(valid)) / max(len(valid), 1),
    }
