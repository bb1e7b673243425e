"""Other ingested corpora every trial of a sweep is tested on (`--eval-data NAME=DIR`, `--eval-label-map`),
checked on the driver before launch: intact shards, and at least one clip whose label maps to the training
corpus's (clips that map to none are left out and counted)."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class HeldOutCorpus:
    """Another ingested corpus every trial is tested on (--eval-data), as checked before launch."""

    directory: Path
    mapped: object  # shards.label_map.MappedLabels

    def describe(self) -> str:
        return f"{self.directory}; {self.mapped.mapped_clips} clips; {self.mapped.describe()}"


def parse_label_maps(values: list[str]) -> dict[str, str]:
    from shards.table import parse_label_map

    merged: dict[str, str] = {}
    for value in values:
        try:
            merged.update(parse_label_map(value))
        except ValueError as error:
            raise SystemExit(f"--eval-label-map {value!r}: {error}") from None
    return merged


def held_out_corpora(pairs: list[str], label_maps: list[str], labels: tuple[str, ...]) -> dict[str, HeldOutCorpus]:
    """--eval-data NAME=DIR pairs as checked held-out sets `test_NAME`: intact shards, and at least one
    clip whose label maps to the training corpus's; clips that map to none are counted."""
    from shards.integrity import ShardIntegrityError, verify_shards_once
    from shards.label_map import LabelMapError, mapped_labels
    from shards.reader import ShardReader

    if label_maps and not pairs:
        raise SystemExit("--eval-label-map maps the labels of --eval-data corpora; give --eval-data NAME=DIR")
    explicit = parse_label_maps(label_maps)
    corpora: dict[str, HeldOutCorpus] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip() or not raw.strip():
            raise SystemExit(f"--eval-data expects NAME=DIR, got {pair!r}")
        name = name.strip()
        set_name = name if name.startswith("test_") else f"test_{name}"
        directory = Path(raw.strip()).expanduser().resolve()
        if set_name in corpora:
            raise SystemExit(f"--eval-data names {set_name!r} twice")
        try:
            verify_shards_once(directory)
            reader = ShardReader(directory)
            mapped = mapped_labels(reader, labels, explicit)
        except FileNotFoundError as error:
            raise SystemExit(f"--eval-data {pair}: not an ingested corpus ({error})") from None
        except (ShardIntegrityError, LabelMapError) as error:
            raise SystemExit(f"--eval-data {pair}: {error}") from None
        if mapped.mapped_clips == 0:
            raise SystemExit(
                f"--eval-data {pair}: none of its labels {reader.labels} is one of the training corpus's {labels}; "
                "map them with --eval-label-map SRC=DST,..."
            )
        corpora[set_name] = HeldOutCorpus(directory, mapped)
    return corpora
