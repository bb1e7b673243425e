"""The fault-injection script's cheapest case end to end: a corrupted shard stops the sweep before any trial,
with one line, no MLflow trial run and nothing left running. (`python -m bench faults` runs every case.)"""

import pytest

from bench import faults

pytestmark = pytest.mark.slow


def test_xor_middle_flips_bytes_in_place(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 8)
    faults.xor_middle(path, 256)
    changed = [i for i, (a, b) in enumerate(zip(path.read_bytes(), bytes(range(256)) * 8)) if a != b]
    assert len(changed) == 256 and changed[0] == 1024 - 128 and path.stat().st_size == 2048


def test_a_corrupted_corpus_is_refused_and_leaves_nothing(demo_dir, tmp_path):
    outcome = faults.corrupt(tmp_path, demo_dir, epoch_scale=0.5)
    assert outcome.exit_codes == ["sweep 1"], outcome.lines()
    assert ".arrow" in outcome.note, outcome.note
    assert outcome.runs_per_trial == {} and outcome.left_running == []
