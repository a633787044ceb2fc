"""`python -m gaga.tstar`: T* for a grid of thresholds without training, one table and one plot for the sweep,
each evaluation in the T* cache that training runs read."""

import csv

from tests.train_runs import train_py

SUBSET = ["data.subset.train=512", "gaga.dataset_molecules=512", "gaga.workers=1"]


def test_eps_grid_gives_one_table_and_plot_and_fills_the_cache(tmp_path):
    grid = ["gaga.eps_ds=0.03,0.05", "gaga.eps_dep=0.02,0.05", f"gaga.cache_dir={tmp_path / 'cache'}"]
    out = train_py(*SUBSET, *grid, f"hydra.sweep.dir={tmp_path / 'a'}", script="-m gaga.tstar", multirun=True).stdout
    with open(tmp_path / "a/tstar_sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(float(r["eps_ds"]), float(r["eps_dep"])) for r in rows] == [
        (0.03, 0.02),
        (0.03, 0.05),
        (0.05, 0.02),
        (0.05, 0.05),
    ]
    t_ds = {r["eps_ds"]: r["T_DS positions"] for r in rows}
    assert int(t_ds["0.03"]) > int(t_ds["0.05"])  # a stricter distance threshold is met later on the trajectory
    for row in rows:
        steps = [int(row[f"{kind} {block}"]) for kind in ("T_ID", "T_DS") for block in ("positions", "features")]
        assert int(row["T*"]) == max(steps)
    assert (tmp_path / "a/tstar_sweep.png").stat().st_size > 10_000
    assert "checkpoints" not in {p.name for p in (tmp_path / "a/0").iterdir()}  # nothing trained
    assert out.count("T* sweep of 4 jobs") == 1

    assert len(list((tmp_path / "cache").glob("tstar_*.json"))) == 4


def test_a_geoldm_encoder_is_the_one_training_builds(monkeypatch, tmp_path):
    """T* is found on the latents of the encoder `seed` gives, whatever the global random state was before."""
    import torch

    from gaga.callbacks.gaussianity import GaussianityCallback
    from gaga.config import compose
    from gaga.models.base import weights_digest
    from gaga.tstar import find

    monkeypatch.setattr(GaussianityCallback, "evaluate", lambda self, datamodule, model: weights_digest(model.encoder))
    overrides = [
        "experiment=quickstart",
        "backbone=geoldm",
        "backbone.net.hidden_nf=16",
        "data.subset.train=64",
        f"paths.output_dir={tmp_path}",
    ]
    digests = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # another global state before each run
        digests.append(find(compose("tstar", overrides)))
    other = find(compose("tstar", [*overrides, "seed=7"]))
    assert digests[0] == digests[1] != other
