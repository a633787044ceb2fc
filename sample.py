"""Sample molecules from a trained checkpoint: `python sample.py ckpt=PATH n_samples=10000`.

Same as the `gaga-sample` command; writes SDF, XYZ and metrics.json into the run folder.
"""

from gaga.cli import sample

if __name__ == "__main__":
    sample()
