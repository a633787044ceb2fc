"""Fuzzing with hypothesis: gaga.evaluate's SDF and XYZ readers either parse a file or raise MoleculeFileError (never
another exception, never a hang, never unbounded memory); Hydra override values give a clean config error or a
config that passes gaga's settings rules."""

import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaga.checks import SettingsError, check_settings
from gaga.config import compose
from gaga.io import read_molecules, write_xyz
from gaga.io.text import MoleculeFileError

FOLDER = Path(tempfile.mkdtemp(prefix="gaga-fuzz-"))


def fuzz(examples: int) -> settings:
    """Reproducible runs (a fixed seed, no example database) without per-example deadlines."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 200).map(str),
    st.sampled_from(["nan", "-inf", "1e999", "0x10", "1_0", "²", "١", "", "-0"]),
)
WORD = st.one_of(NUMBER, st.sampled_from(["C", "H", "O", "N", "F", "Xx", "Cl", "R", "*", "$$$$", "M", "END", "V2000"]))
LINE = st.one_of(st.lists(WORD, max_size=6).map(" ".join), st.text(max_size=30))
XYZ_TEXT = st.lists(LINE, max_size=12).map("\n".join)
ATOM_LINE = st.tuples(NUMBER, NUMBER, NUMBER, WORD).map(lambda f: f"{f[0]:>10} {f[1]:>9} {f[2]:>9} {f[3]:<3} 0  0")
SDF_TEXT = st.tuples(st.integers(0, 4), st.lists(ATOM_LINE, max_size=4), st.lists(LINE, max_size=3), st.booleans()).map(
    lambda p: (
        f"name\n  gaga          3D\n\n{p[0]:>3}  0  0  0  0  0  0  0  0  0999 V2000\n"
        + "".join(line + "\n" for line in p[1])
        + "".join(line + "\n" for line in p[2])
        + "M  END\n"
        + ("$$$$\n" if p[3] else "")
    )
)


def read_or_refuse(data: bytes, suffix: str) -> None:
    """Parse `data` as a molecule file: a MoleculeFileError is fine, any other exception fails the test."""
    path = FOLDER / f"case{suffix}"
    path.write_bytes(data)
    try:
        molecules = read_molecules(path)
    except MoleculeFileError:
        return
    assert len(molecules) >= 1 and np.isfinite(molecules.positions).all()


@fuzz(450)
@given(st.one_of(XYZ_TEXT.map(str.encode), st.binary(max_size=200)))
def test_xyz_reader_parses_or_refuses(data):
    read_or_refuse(data, ".xyz")


@fuzz(350)
@given(st.one_of(SDF_TEXT.map(str.encode), st.binary(max_size=200)))
def test_sdf_reader_parses_or_refuses(data):
    read_or_refuse(data, ".sdf")


@fuzz(50)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(1, 118), st.tuples(*[st.floats(-1e4, 1e4, allow_subnormal=False)] * 3)),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_written_molecules_read_back(molecules):
    pairs = [(np.array([z for z, _ in atoms]), np.array([xyz for _, xyz in atoms])) for atoms in molecules]
    back = read_molecules(write_xyz(FOLDER / "round.xyz", pairs))
    assert [z.tolist() for z, _ in back] == [z.tolist() for z, _ in pairs]
    np.testing.assert_allclose(back.positions, np.concatenate([pos for _, pos in pairs]), atol=1e-6)


@pytest.mark.parametrize("suffix", [".xyz", ".sdf"])
def test_huge_files_of_one_line_are_refused_in_bounded_memory(tmp_path, suffix):
    endless = tmp_path / f"endless{suffix}"
    with endless.open("wb") as stream:  # 2 GB of NUL bytes, one endless line (sparse: no disk used)
        stream.truncate(2 << 30)
    repeated = tmp_path / f"repeated{suffix}"
    repeated.write_bytes(b"C 0.0 0.0 0.0\n" * 1_000_000)  # 14 MB of one repeated line
    tracemalloc.start()
    try:
        for path in (endless, repeated):
            with pytest.raises(MoleculeFileError, match=path.name):
                read_molecules(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"


OVERRIDE_KEYS = ["data.batch_size", "gaga.eps_ds", "gaga.t_star", "trainer.max_epochs", "backbone.optimizer.lr", "seed"]
OVERRIDE_VALUES = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["null", "true", "[1,2]", "{a: 1}", "'3'", "${seed}", "${oops}", "auto", "off", "=", "", "'"]),
    st.text(alphabet="abc019.-_ =,[]{}'\"$:", max_size=8),
)


@fuzz(8)
@given(st.sampled_from(OVERRIDE_KEYS), OVERRIDE_VALUES)
def test_override_values_give_a_config_error_or_a_valid_config(key, value):
    try:
        cfg = compose("train", [f"{key}={value}"], output_dir=str(FOLDER))
        check_settings(cfg)
    except (HydraException, SettingsError) as error:
        assert str(error).strip()  # a message, not an empty error
