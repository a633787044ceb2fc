"""Bad input as a new user would give it, one table: each case exits non-zero with one message naming the input and
the fix, leaves earlier outputs untouched, and never ends in a traceback. train.py and sample.py run in-process through
their real Hydra entry points (the same parsing, composition and error reporting as on the command line)."""

import re
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from gaga import cli, evaluate
from gaga.callbacks.checkpoint_integrity import CheckpointIntegrity
from gaga.config import REPO_ROOT
from tests.conftest import quiet_trainer, tiny_setup

TRAIN = [
    "experiment=quickstart",
    "backbone.net.hidden_nf=16",
    "backbone.net.n_layers=1",
    "data.subset.train=64",
    "data.subset.valid=16",
    "data.subset.test=8",
    "data.batch_size=16",
    "logger=csv",
    "~callbacks.sample_quality",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "gaga.cache_dir=null",
    "schedule.timesteps=100",
]
ONE_ATOM_SDF = (
    "m\n  gaga          3D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
    "    {x}    0.0000    0.0000 {element}   0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n$$$$\n"
)


@dataclass
class Case:
    name: str
    entry: str  # train | sample | evaluate
    args: list[str]
    expected: str  # a regular expression the message must match
    files: dict | None = None  # name -> bytes, written into the case's folder (`{dir}` in args)
    early: bool = True  # refused before the data load (train.py prints no data summary)


CASES = [
    # config keys, groups and types
    Case("unknown key", "train", ["trainer.max_epoch=3"], r"Could not override 'trainer.max_epoch'.*\+trainer"),
    Case("unknown group option", "train", ["backbone=edn"], r"Could not find 'backbone/edn'.*Available options"),
    Case("unknown group", "train", ["optimizer=adam"], r"Could not override 'optimizer'"),
    Case("text for an integer", "train", ["data.batch_size=abc"], r"data.batch_size='abc': .* an integer >= 1"),
    Case("text for a number", "train", ["gaga.eps_ds=high"], r"gaga.eps_ds='high': .* in \(0, 1\)"),
    Case("negative learning rate", "train", ["backbone.optimizer.lr=-1"], r"backbone.optimizer.lr=-1: .*> 0"),
    Case("zero-width network", "train", ["backbone.net.hidden_nf=0"], r"backbone.net.hidden_nf=0: .*>= 1"),
    Case("missing mandatory ckpt", "sample", [], r"ckpt is not set; pass ckpt=\.\.\. .*last.ckpt"),
    # GAGA settings
    Case("eps_ds = 0", "train", ["gaga.eps_ds=0"], r"gaga.eps_ds=0: .* in \(0, 1\)"),
    Case("eps_ds above 1", "train", ["gaga.eps_ds=1.5"], r"gaga.eps_ds=1.5: .* in \(0, 1\)"),
    Case("T* above T", "train", ["gaga.t_star=5000"], r"gaga.t_star=5000: T\* must lie in 1..100 .*t_star=auto"),
    Case("T* zero", "train", ["gaga.t_star=0"], r"gaga.t_star=0: T\* must lie in 1..100"),
    Case(
        "T* text",
        "train",
        ["gaga.t_star=soon"],
        r"t_star='soon': gaga.t_star must be auto, off or a step",
    ),
    Case(
        "GAGA with the OT coupling",
        "train",
        ["backbone=flow_matching", "backbone.ot_coupling=true"],
        r"GAGA's closed form needs noise independent of the data, .* set backbone.ot_coupling=false or gaga.t_star=off",
    ),
    # the property predictor
    Case(
        "predictor without a property",
        "train",
        ["backbone=property_predictor"],
        r"data.conditioning=\[\]: the property predictor predicts exactly one property; name one, e.g. "
        r"data.conditioning=\[alpha\]",
    ),
    Case(
        "predictor of two properties",
        "train",
        ["backbone=property_predictor", "data.conditioning=[alpha,mu]"],
        r"data.conditioning=\['alpha', 'mu'\]: the property predictor predicts exactly one property",
    ),
    # data sizes
    Case("batch of 0", "train", ["data.batch_size=0"], r"data.batch_size=0: .*>= 1"),
    Case("batch above the split", "train", ["data.batch_size=100"], r"batch_size=100 is larger than the", early=False),
    Case("subset above the data", "train", ["data.subset.train=1000000"], r"subset.train=1000000 is", early=False),
    Case(
        "GeoLDM encoder units",
        "train",
        ["backbone=geoldm", "backbone.encoder_inputs=scaled"],
        r"backbone.encoder_inputs='scaled': .* must be raw \(the released GeoLDM\) or normalised",
    ),
    Case(
        "GeoLDM first-stage sigma",
        "train",
        ["backbone=geoldm", "backbone.autoencoder_sigma=0"],
        r"backbone.autoencoder_sigma=0: .* must be a number > 0 \(released: 0.0032\) or null",
    ),
    Case("n_samples 0", "sample", ["ckpt={ckpt}", "n_samples=0"], r"n_samples=0: n_samples must be an integer >= 1"),
    Case("sample batch 0", "sample", ["ckpt={ckpt}", "batch_size=0"], r"batch_size=0: batch_size must be an integer"),
    Case("chain -1", "sample", ["ckpt={ckpt}", "chain=-1"], r"chain=-1: chain must be an integer >= 0"),
    Case(
        "chain beyond the first batch",
        "sample",
        ["ckpt={ckpt}", "batch_size=4", "chain=5"],
        r"chain=5 is larger than the first batch \(4 molecules\); set chain<=4",
    ),
    Case("chain of 1 frame", "sample", ["ckpt={ckpt}", "chain_frames=1"], r"chain_frames=1: chain_frames must be"),
    Case("pictures -2", "sample", ["ckpt={ckpt}", "pictures=-2"], r"pictures=-2: pictures must be an integer >= 0"),
    # checkpoints
    Case("resume: no such file", "train", ["ckpt_path={dir}/missing.ckpt"], r"missing.ckpt: no such file; pass"),
    Case(
        "resume: another backbone",
        "train",
        ["ckpt_path={ckpt}", "backbone=flow_matching"],
        r"edm backbone .*"
        r"checkpoint, but backbone=flow_matching was asked for; pass a checkpoint of backbone flow_matching",
    ),
    Case(
        "resume: another dataset",
        "train",
        ["ckpt_path={ckpt}", "data.remove_h=true"],
        r"qm9 dataset checkpoint, but dataset=qm9_noH",
    ),
    Case("resume: a text file", "train", ["ckpt_path=" + str(REPO_ROOT / "README.md")], r"not a loadable gaga"),
    Case("resume: truncated", "train", ["ckpt_path={truncated}"], r"truncated.ckpt: corrupt or truncated"),
    Case(
        "sample: another backbone",
        "sample",
        ["ckpt={ckpt}", "expect_backbone=geoldm"],
        r"but backbone=geoldm was asked",
    ),
    Case("sample: another dataset", "sample", ["ckpt={ckpt}", "expect_dataset=drugs"], r"but dataset=drugs was asked"),
    Case("sample: a text file", "sample", ["ckpt=" + str(REPO_ROOT / "README.md")], r"not a loadable gaga checkpoint"),
    Case(
        "sample: an empty file",
        "sample",
        ["ckpt={dir}/empty.ckpt"],
        r"empty.ckpt: the file is empty",
        {"empty.ckpt": b""},
    ),
    Case("sample: truncated", "sample", ["ckpt={truncated}"], r"corrupt or truncated \(\d+ bytes, but \d+ were"),
    Case("sample: corrupted bytes", "sample", ["ckpt={flipped}"], r"flipped.ckpt: corrupt or truncated \(its SHA"),
    # GEOM-Drugs
    Case(
        "missing GEOM folder",
        "train",
        ["data=drugs", "paths.data_dir={dir}", "paths.drugs_source={dir}/geom"],
        r"GEOM-Drugs is not available.*the folder .*geom does not exist",
    ),
    Case(
        "GEOM folder without one file",
        "train",
        ["data=drugs", "paths.data_dir={dir}", "paths.drugs_source={dir}"],
        r"lacks geom_drugs_smiles.txt of EDM's processed files",
        {"geom_drugs_30.npy": b"", "geom_drugs_n_30.npy": b""},
    ),
    # molecule files given to gaga.evaluate
    Case("empty XYZ", "evaluate", ["{dir}/m.xyz"], r"m.xyz: no XYZ records \(the file is empty\)", {"m.xyz": b""}),
    Case(
        "XYZ count too high",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 1: the record declares 3 atoms but the "
        r"file ends after 1",
        {"m.xyz": b"3\n\nC 0 0 0\n"},
    ),
    Case(
        "XYZ count not a number",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 1: expected a positive atom count",
        {"m.xyz": b"two\n\nC 0 0 0\nC 1 0 0\n"},
    ),
    Case(
        "XYZ count too low",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 4: expected a positive atom count, found 'O",
        {"m.xyz": b"1\n\nC 0 0 0\nO 1 0 0\n"},
    ),
    Case(
        "XYZ unknown element",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 3: unknown element symbol 'Xx'",
        {"m.xyz": b"1\n\nXx 0 0 0\n"},
    ),
    Case(
        "XYZ NaN",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 3: coordinates .* not finite",
        {"m.xyz": b"1\n\nC nan 0 0\n"},
    ),
    Case("XYZ infinity", "evaluate", ["{dir}/m.xyz"], r"m.xyz, line 3: .* not finite", {"m.xyz": b"1\n\nC 0 -inf 0\n"}),
    Case(
        "XYZ binary garbage",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 1: not UTF-8 text",
        {"m.xyz": bytes(np.random.default_rng(0).integers(128, 256, 4000, dtype=np.uint8))},
    ),
    Case(
        "XYZ one endless line",
        "evaluate",
        ["{dir}/m.xyz"],
        r"m.xyz, line 1: longer than 100000 bytes",
        {"m.xyz": b"1" * 300_000},
    ),
    Case("empty SDF", "evaluate", ["{dir}/m.sdf"], r"m.sdf: no molecules in this SDF file", {"m.sdf": b""}),
    Case(
        "SDF count too high",
        "evaluate",
        ["{dir}/m.sdf"],
        r"m.sdf, record 0 \(line 1\): RDKit cannot parse",
        {"m.sdf": ONE_ATOM_SDF.format(x="    0.0000", element="C ").replace("  1  0  0", "  3  0  0").encode()},
    ),
    Case(
        "SDF unknown element",
        "evaluate",
        ["{dir}/m.sdf"],
        r"m.sdf, record 0 \(line 1\): RDKit cannot parse",
        {"m.sdf": ONE_ATOM_SDF.format(x="    0.0000", element="Qq").encode()},
    ),
    Case(
        "SDF NaN",
        "evaluate",
        ["{dir}/m.sdf"],
        r"m.sdf, record 0 \(line 1\): RDKit cannot parse",
        {"m.sdf": ONE_ATOM_SDF.format(x="       nan", element="C ").encode()},
    ),
    Case(
        "SDF binary garbage",
        "evaluate",
        ["{dir}/m.sdf"],
        r"m.sdf, line \d+: not UTF-8 text",
        {"m.sdf": bytes(np.random.default_rng(1).integers(128, 256, 4000, dtype=np.uint8))},
    ),
    Case(
        "SDF one repeated line",
        "evaluate",
        ["{dir}/m.sdf"],
        r"m.sdf, line 1: a record longer than 100000 lines",
        {"m.sdf": b"C 0.0 0.0 0.0\n" * 150_000},
    ),
    Case("unknown file type", "evaluate", ["{dir}/m.pdb"], r"unknown molecule file type '.pdb'", {"m.pdb": b"x"}),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny EDM checkpoint with its digest, a truncated copy and a copy with one byte flipped (digests kept)."""
    folder = tmp_path_factory.mktemp("bad-input-ckpt")
    datamodule, model = tiny_setup("edm")
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        default_root_dir=folder,
        callbacks=[CheckpointIntegrity()],
    )
    trainer.fit(model, datamodule=datamodule)
    paths = {name: folder / f"{name}.ckpt" for name in ("ckpt", "truncated", "flipped")}
    for path in paths.values():
        trainer.save_checkpoint(path)
    data = paths["truncated"].read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    paths["flipped"].write_bytes(bytes(flipped))
    assert torch.load(paths["ckpt"], weights_only=True)["hyper_parameters"]["backbone"] == "edm"
    return paths


def run_entry(entry: str, args: list[str], output: str, monkeypatch, capsys) -> tuple[object, str]:
    """(exit code, everything printed) of one command, as `python train.py|sample.py ARGS` or `-m gaga.evaluate`."""
    if entry == "evaluate":
        code = evaluate.main([*args, "--data", "qm9", "--out", f"{output}/metrics.json", "--quiet"])
    else:
        overrides = [*TRAIN, *args] if entry == "train" else args
        monkeypatch.setattr(sys, "argv", [f"{entry}.py", *overrides, f"hydra.run.dir={output}"])
        try:
            getattr(cli, entry)()
            code = 0
        except SystemExit as stop:
            code = stop.code
    printed = capsys.readouterr()
    return code, f"{code if isinstance(code, str) else ''}{printed.out}{printed.err}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_clear_error(case, checkpoints, tmp_path, monkeypatch, capsys):
    for name, data in (case.files or {}).items():
        (tmp_path / name).write_bytes(data)
    output = tmp_path / "run"
    output.mkdir()
    (output / "metrics.json").write_text("earlier results\n")
    names = {"dir": tmp_path, **checkpoints}
    code, message = run_entry(case.entry, [arg.format(**names) for arg in case.args], str(output), monkeypatch, capsys)
    assert code not in (0, None), message[-2000:]
    assert re.search(case.expected, message, flags=re.DOTALL), message[-2000:]
    assert "Traceback" not in message
    assert "atoms/molecule" not in message or not case.early  # no data summary: refused before the data load
    assert (output / "metrics.json").read_text() == "earlier results\n"  # earlier outputs untouched
    assert not (output / "checkpoints").exists() and not (output / "samples.sdf").exists()
