"""Train a model from the Hydra config in conf/: `python train.py experiment=quickstart`.

Same as the `gaga-train` command; see `python train.py --help` for the config groups.
"""

from gaga.cli import train

if __name__ == "__main__":
    train()
