"""EDM's and GeoLDM's released code, imported from git-ignored checkouts, for the equivalence tests and scripts.

Nothing of either is copied into gaga: the code is imported from experiments/edm_reference/
(ehoogeboom/e3_diffusion_for_molecules) and experiments/geoldm_reference/ (MinkaiXu/GeoLDM), e.g.
`git clone https://github.com/MinkaiXu/GeoLDM experiments/geoldm_reference`. Both repositories use the same
top-level package names (egnn, equivariant_diffusion, qm9, utils), so each is imported with its own copy of those
modules and the names are taken out of sys.modules again (`import_released`).

Also here: the released networks' weights in gaga's layout (`gaga_state_dict`), dense padded batches as the
released data loaders serve them (`dense`), and `NoiseTape`, which records the random draws gaga makes so that
the released code can be handed exactly the same steps and noise.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch_geometric.utils import to_dense_batch

from gaga.diffusion.forward import remove_mean

HERE = Path(__file__).resolve().parent
FOLDERS = {"edm": HERE / "edm_reference", "geoldm": HERE / "geoldm_reference"}
REPOSITORIES = {"edm": "ehoogeboom/e3_diffusion_for_molecules", "geoldm": "MinkaiXu/GeoLDM"}
TOP_LEVEL = ("egnn", "equivariant_diffusion", "qm9", "utils")


def available(name: str) -> bool:
    """Whether the checkout of the released code `name` ("edm" or "geoldm") is there."""
    return (FOLDERS[name] / "equivariant_diffusion" / "en_diffusion.py").is_file()


def skipped_note(name: str) -> str:
    return (
        f"{name} reference code absent: {FOLDERS[name]} holds no checkout of {REPOSITORIES[name]} "
        f"(git clone https://github.com/{REPOSITORIES[name]} {FOLDERS[name].relative_to(HERE.parent)})"
    )


def _is_released(module: str) -> bool:
    return module.split(".")[0] in TOP_LEVEL


def import_released(name: str, *modules: str) -> list:
    """The released modules `modules` (dotted names) of checkout `name`, each repository with its own copies."""
    saved = {key: sys.modules.pop(key) for key in list(sys.modules) if _is_released(key)}
    sys.path.insert(0, str(FOLDERS[name]))
    try:
        return [importlib.import_module(module) for module in modules]
    finally:
        sys.path.remove(str(FOLDERS[name]))
        for key in [key for key in sys.modules if _is_released(key)]:
            del sys.modules[key]
        sys.modules.update(saved)


def egnn_options(hidden_nf: int, n_layers: int) -> dict:
    """The released EGNN_*_QM9 arguments of the published QM9 runs (main_qm9.py defaults + README command)."""
    return {
        "context_node_nf": 0,
        "n_dims": 3,
        "device": "cpu",
        "hidden_nf": hidden_nf,
        "act_fn": torch.nn.SiLU(),
        "n_layers": n_layers,
        "attention": True,
        "tanh": True,
        "mode": "egnn_dynamics",
        "norm_constant": 1,
        "inv_sublayers": 1,
        "sin_embedding": False,
        "normalization_factor": 1,
        "aggregation_method": "sum",
    }


def gaga_state_dict(state: dict[str, torch.Tensor], latent_nf: int | None = None) -> dict[str, torch.Tensor]:
    """A released EGNN_dynamics/encoder/decoder_QM9 state dict in gaga's names (EGNNDynamics, EquivariantEncoder,
    EquivariantDecoder). The encoder's head (`final_mlp`, give `latent_nf`) orders its outputs [coordinate
    log-variance, means, log-variances]; gaga's [means, log-variances, coordinate log-variance]."""
    converted = {}
    for key, value in state.items():
        key = re.sub(r"e_block_(\d+)\.gcl_equiv\.", r"blocks.\1.coord_update.", key)
        key = re.sub(r"e_block_(\d+)\.gcl_(\d+)\.", r"blocks.\1.gcls.\2.", key)
        if key.startswith("final_mlp."):
            key = "head." + key.removeprefix("final_mlp.")
            if key.startswith("head.2.") and latent_nf is not None:
                value = value[list(range(1, 2 * latent_nf + 1)) + [0]]
        converted[key] = value
    return converted


def edge_mask(node_mask: torch.Tensor) -> torch.Tensor:
    """The released collate's edge mask: all pairs of real atoms of a molecule but the diagonal, [B * n * n, 1]."""
    pairs = node_mask[:, :, None] & node_mask[:, None, :]
    pairs &= ~torch.eye(node_mask.shape[1], dtype=torch.bool, device=node_mask.device)
    return pairs.reshape(-1, 1).to(torch.float64)


def dense(values: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Flat per-atom rows [N, ...] -> [B, n_max, ...], zero padded (the released layout)."""
    return to_dense_batch(values, batch)[0]


def masks(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(node_mask [B, n, 1], edge_mask [B * n * n, 1]) in float64, as the released loaders give them."""
    _, node_mask = to_dense_batch(torch.zeros(len(batch), 1), batch)
    return node_mask.unsqueeze(2).to(torch.float64), edge_mask(node_mask)


class NoiseTape:
    """Records every `torch.randn` / `torch.randint` draw made inside `record()`, then replays them to the
    released code: `combined_noise` stands in for its `sample_combined_position_feature_noise` (a coordinate draw
    projected to zero CoM, then a feature draw, padded; a feature draw gaga did not make, e.g. for EDM's unused
    p(h | z_0) noise, is zero) and `steps()` for its `torch.randint` of the step t."""

    def __init__(self, batch: torch.Tensor):
        self.batch, self.draws = batch, []

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        randn, randint = torch.randn, torch.randint

        def recorded(function):
            def draw(*args, **kwargs):
                value = function(*args, **kwargs)
                self.draws.append(value)
                return value

            return draw

        torch.randn, torch.randint = recorded(randn), recorded(randint)
        try:
            yield
        finally:
            torch.randn, torch.randint = randn, randint

    def _next(self, dtype_is_float: bool, width: int | None = None) -> torch.Tensor | None:
        if not self.draws or self.draws[0].is_floating_point() != dtype_is_float:
            return None
        if width is not None and (self.draws[0].dim() != 2 or self.draws[0].shape[1] != width):
            return None
        return self.draws.pop(0)

    def combined_noise(self, n_samples: int, n_nodes: int, node_mask: torch.Tensor, width: int) -> torch.Tensor:
        pos = self._next(True, 3)
        if pos is None:
            raise AssertionError("the released code drew noise that gaga did not draw")
        features = self._next(True, width)
        if features is None:
            features = torch.zeros(pos.shape[0], width, dtype=pos.dtype)
        noise = torch.cat([remove_mean(pos, self.batch), features], dim=1)
        padded = dense(noise, self.batch)
        assert padded.shape[:2] == (n_samples, n_nodes), (padded.shape, n_samples, n_nodes)
        return padded * node_mask

    @contextlib.contextmanager
    def steps(self) -> Iterator[None]:
        """torch.randint returns gaga's recorded steps [B] as the released code's [B, 1]."""
        randint = torch.randint

        def replay(low, high, size, **kwargs):
            value = self._next(False)
            if value is None:
                raise AssertionError("the released code drew a step that gaga did not draw")
            assert bool(((value >= low) & (value < high)).all()), (value, low, high)
            return value.reshape(size)

        torch.randint = replay
        try:
            yield
        finally:
            torch.randint = randint

    def wire(self, model, width: int) -> None:
        """Make `model` (released EnVariationalDiffusion / EnHierarchicalVAE) draw from this tape."""
        model.sample_combined_position_feature_noise = lambda n_samples, n_nodes, node_mask: self.combined_noise(
            n_samples, n_nodes, node_mask, width
        )

    def assert_used_up(self) -> None:
        assert not self.draws, f"{len(self.draws)} of gaga's draws were not used by the released code"
