"""XYZ and SDF files: round trips of real QM9 molecules, accepted variants, and errors naming file and line.

Oracle: the molecules written must come back atom for atom, to the precision the format stores.
"""

import numpy as np
import pytest

from gaga.io import read_molecules, read_sdf, read_xyz, write_sdf, write_xyz, write_xyz_folder
from gaga.metrics.bonds import bond_rules, molecule_bonds


@pytest.fixture(scope="module")
def molecules(qm9_sample):
    return qm9_sample.subset(np.arange(50))


def assert_same(read, written, tolerance):
    assert len(read) == len(written)
    assert np.array_equal(read.offsets, written.offsets)
    assert np.array_equal(read.atomic_numbers, written.atomic_numbers)
    assert np.abs(read.positions - written.positions).max() <= tolerance


def test_multi_molecule_xyz_round_trip(tmp_path, molecules):
    path = write_xyz(tmp_path / "samples.xyz", molecules)
    assert_same(read_xyz(path), molecules, 1e-6)
    assert_same(read_molecules(path), molecules, 1e-6)


def test_folder_of_xyz_reads_in_natural_order(tmp_path, molecules):
    write_xyz_folder(tmp_path, molecules.subset(np.arange(12)))
    (tmp_path / "molecule_00002.xyz").rename(tmp_path / "mol_2.xyz")
    (tmp_path / "molecule_00010.xyz").rename(tmp_path / "mol_10.xyz")
    read = read_molecules(tmp_path)
    expected_order = [2, 10, 0, 1, 3, 4, 5, 6, 7, 8, 9, 11]  # mol_2 before mol_10, then the molecule_* files
    assert_same(read, molecules.subset(np.array(expected_order)), 1e-6)


def test_sdf_round_trip_with_bonds(tmp_path, molecules):
    path = write_sdf(tmp_path / "samples.sdf", molecules)
    assert_same(read_sdf(path), molecules, 6e-5)  # SDF stores 4 decimals
    assert path.read_text().count("$$$$") == len(molecules)
    counts_line = path.read_text().splitlines()[3]  # V2000 counts line of the first record: atoms, bonds
    edm_bonds = molecule_bonds(*molecules.molecule(0), bond_rules("qm9"))
    assert counts_line.endswith("V2000") and int(counts_line[3:6]) == len(edm_bonds.order) > 0


def test_xyz_accepts_atomic_numbers_extra_columns_and_blank_lines(tmp_path):
    path = tmp_path / "water.xyz"
    path.write_text("3\nwater\n8 0 0 0 -0.8\nh 0.96 0 0 0.4\nH -0.24 0.93 0 0.4\n\n\n1\n\nHe 0 0 0\n")
    read = read_xyz(path)
    assert read.atomic_numbers.tolist() == [8, 1, 1, 2] and read.offsets.tolist() == [0, 3, 4]
    assert read.positions[1] == pytest.approx([0.96, 0, 0])


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("three\ncomment\n", 1, "positive atom count"),
        ("2\ncomment\nC 0 0 0\n", 1, "file ends"),
        ("1\ncomment\nXx 0 0 0\n", 3, "unknown element"),
        ("1\ncomment\nC 0 zero 0\n", 3, "could not convert"),
        ("1\ncomment\nC 0 0\n", 3, "element x y z"),
        ("1\nc\nC 0 0 0\n2\nc\nC 0 0 0\nO 0 nan 1\n", 7, "not finite"),
        ("1\ncomment\n200 0 0 0\n", 3, "outside 1..118"),
    ],
)
def test_malformed_xyz_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"bad\.xyz, line {line}: .*{words}"):
        read_xyz(path)


def drawing_2d(smiles: str) -> str:
    """Mol block of a 2D structure drawing, as chemical editors export it."""
    from rdkit import Chem
    from rdkit.Chem import rdDepictor

    molecule = Chem.MolFromSmiles(smiles)
    rdDepictor.Compute2DCoords(molecule)
    return Chem.MolToMolBlock(molecule)


def test_malformed_sdf_names_record_and_line(tmp_path, molecules):
    good = write_sdf(tmp_path / "good.sdf", molecules.subset(np.arange(2))).read_text()
    records = good.split("$$$$\n")
    broken = records[1].replace("  0  0  0  0  0  0  0  0  0  0  0  0", " zz", 1)  # damage the first atom line
    path = tmp_path / "bad.sdf"
    path.write_text(records[0] + "$$$$\n" + broken + "$$$$\n")
    first_line_of_second = records[0].count("\n") + 2
    with pytest.raises(ValueError, match=rf"bad\.sdf, record 1 \(line {first_line_of_second}\)"):
        read_sdf(path)
    flat = tmp_path / "flat.sdf"
    flat.write_text(drawing_2d("CCO") + "$$$$\n")
    with pytest.raises(ValueError, match="no 3D coordinates"):
        read_sdf(flat)


def test_failed_write_keeps_the_old_file(tmp_path, molecules):
    path = write_xyz(tmp_path / "samples.xyz", molecules)
    before = path.read_text()
    z, positions = molecules.molecule(0)
    with pytest.raises(ValueError, match="NaN"):
        write_xyz(path, [(z, np.full_like(positions, np.nan))])
    with pytest.raises(ValueError, match="one line"):
        write_xyz(path, [(z, positions)], comments=["two\nlines"])
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["samples.xyz"]


def test_unknown_paths_and_suffixes_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_molecules(tmp_path / "missing.sdf")
    (tmp_path / "samples.pdb").write_text("")
    with pytest.raises(ValueError, match="unknown molecule file type '.pdb'"):
        read_molecules(tmp_path / "samples.pdb")
    with pytest.raises(ValueError, match="no .xyz files"):
        read_molecules(tmp_path)
