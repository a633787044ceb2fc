"""Files on disk under faults: a full disk (a real write limit, RLIMIT_FSIZE) leaves the previous file and says so;
corrupt data caches are refused by their digest; a T* cache truncated, corrupted, edited, without its digest or with
broken JSON is reported and recomputed, never loaded; two processes writing and reading one cache never see a torn or
mismatched file."""

import errno
import logging
import os
import resource
import signal

import numpy as np
import pytest

from gaga.atomic_files import digest_path, verify_digest, write_digest
from gaga.callbacks.gaussianity import GaussianityCallback
from gaga.data.molecules import CacheError, MoleculeSet
from gaga.gaussianity import TStarResult, find_t_star
from tests.conftest import tiny_setup


def molecules(num: int, value: float = 0.0) -> MoleculeSet:
    """`num` three-atom molecules at `value` (distinct contents per value)."""
    return MoleculeSet(np.full((3 * num, 3), value), np.full(3 * num, 6), np.arange(0, 3 * num + 1, 3))


def test_full_disk_keeps_the_previous_file_and_says_so(tmp_path):
    path = tmp_path / "cache.npz"
    molecules(10).save(path)
    before = path.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        with pytest.raises(OSError, match=r"cache.npz: could not write .*previous file is unchanged. Free disk") as e:
            molecules(20_000, 1.5).save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert e.value.errno == errno.EFBIG
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "cache.npz",
        "cache.npz.lock",
        "cache.npz.sha256",
    ]
    assert MoleculeSet.load(path, "rebuild")[0].positions.max() == 0.0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_data_cache_is_refused_by_its_digest(tmp_path, damage):
    path = tmp_path / "cache.npz"
    molecules(50, 2.0).save(path)
    data = bytearray(path.read_bytes())
    if damage == "flip":  # a flipped byte inside the compressed arrays: zip's own checks may not notice
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data[: len(data) - 100] if damage == "truncate" else data))
    with pytest.raises(CacheError, match=r"cache.npz: corrupt or truncated .*cache.npz.sha256.*Rebuild with X"):
        MoleculeSet.load(path, "Rebuild with X")


def test_damaged_t_star_cache_is_reported_and_recomputed_never_loaded(tmp_path, caplog, monkeypatch):
    """Each damage to a T* cache is named in a warning and costs one recomputation; the result is never the file's (an
    edited T* stays unused), and the cache is written again whole, with its digest."""
    import gaga.callbacks.gaussianity as gaussianity

    computed = []
    monkeypatch.setattr(gaussianity, "find_t_star", lambda *a, **k: computed.append(1) or find_t_star(*a, **k))
    settings = {"grid_step": 10, "dataset_molecules": 100, "eps_ds": 0.03, "eps_dep": 0.05, "workers": 1}
    datamodule, model = tiny_setup(zero_mean_features=True)
    callback = GaussianityCallback("auto", cache_dir=tmp_path, **settings)
    t_star = callback.evaluate(datamodule, model).t_star
    [cache] = tmp_path.glob("tstar_*.json")

    def flip_a_byte(text: str) -> None:
        data = bytearray(text.encode())
        data[len(data) // 2] ^= 0x01
        cache.write_bytes(bytes(data))

    damages = {  # damage of the current cache text -> what the warning says
        "truncated": (lambda text: cache.write_text(text[: len(text) // 2]), "were written"),
        "corrupted": (flip_a_byte, "SHA-256 differs"),
        "edited": (lambda text: cache.write_text(text.replace(f'"t_star": {t_star}', '"t_star": 7')), "corrupt"),
        "digest removed": (lambda text: digest_path(cache).unlink(), f"no digest {cache.name}.sha256"),
        "broken JSON, digest to match": (lambda text: (cache.write_text(text[:20]), write_digest(cache)), "unreadable"),
    }
    assert callback.evaluate(datamodule, model).t_star == t_star and len(computed) == 1  # intact: read, not computed
    caplog.set_level(logging.WARNING)
    for damage, (apply, problem) in damages.items():
        caplog.clear()
        apply(cache.read_text())
        assert callback.evaluate(datamodule, model).t_star == t_star, damage
        assert f"T* cache {cache} (" in caplog.text and problem in caplog.text and "recomputing" in caplog.text, damage
        verify_digest(cache, required=True)  # written again, whole, with its digest
        assert TStarResult.from_json(cache.read_text()).t_star == t_star, damage
    assert len(computed) == 1 + len(damages)


def _writer(path, value: float, rounds: int) -> None:
    """A child process: save the cache `rounds` times, then exit (never returning into pytest)."""
    code = 1
    try:
        for _ in range(rounds):
            molecules(2000, value).save(path)
        code = 0
    finally:
        os._exit(code)


def test_two_processes_sharing_a_cache_never_corrupt_it(tmp_path):
    path = tmp_path / "shared.npz"
    molecules(2000, 1.0).save(path)
    children = []
    for value in (1.0, 2.0):
        pid = os.fork()
        if pid == 0:
            _writer(path, value, rounds=15)
        children.append(pid)
    seen, running, statuses = set(), set(children), []
    while running:
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                statuses.append(status)
        loaded, _ = MoleculeSet.load(path, "rebuild")  # a torn file or a digest of the other writer's file would raise
        seen.add(float(loaded.positions[0, 0]))
        assert np.unique(loaded.positions).size == 1
    verify_digest(path)
    assert statuses == [0, 0] and seen <= {1.0, 2.0}
