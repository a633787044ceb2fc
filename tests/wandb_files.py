"""Read an offline W&B run from its own file (run-<id>.wandb): run name, group, tags, summary, chart specs.

The file is a LevelDB-style log of protobuf records (W&B's transaction log); `wandb sync` uploads the same file.
"""

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK, HEADER = 32768, 7  # log block size; per-chunk header: crc32 (4), length (2), chunk type (1)
FULL, LAST = 1, 4


def records(path: Path):
    """Each protobuf Record of a .wandb file, chunks of records split across blocks joined again."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, chunks = 7, []
    while position + HEADER <= len(data):
        if BLOCK - position % BLOCK < HEADER:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunks.append(data[position + HEADER : position + HEADER + length])
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


@dataclass
class OfflineRun:
    folder: Path
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    charts: dict = field(default_factory=dict)  # key -> panel spec of the native (Vega) plots

    def table(self, key: str) -> dict:
        """The newest table file logged under `key` (columns, data)."""
        path = max((self.folder / "files/media/table").glob(f"{key}_*.table.json"), key=lambda p: p.stat().st_mtime)
        return json.loads(path.read_text())


def read_run(wandb_dir: Path) -> OfflineRun:
    """The one offline run under a `wandb/` folder, its records replayed (the last run record and value win)."""
    (folder,) = Path(wandb_dir).glob("offline-run-*")
    run = OfflineRun(folder)
    for record in records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group, run.tags = record.run.display_name, record.run.run_group, list(record.run.tags)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary["/".join([item.key] if item.key else item.nested_key)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                if list(item.nested_key[:2]) == ["_wandb", "visualize"]:
                    run.charts[item.nested_key[2]] = json.loads(item.value_json)
    return run
