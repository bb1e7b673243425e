"""Split plans: speaker-disjoint by construction, stored next to the data, refused when they leak."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shards.splits import (
    EMOBOX_ESD_TEST_SPEAKERS,
    SPLITS_NAME,
    SpeakerLeakError,
    SplitPlan,
    emobox_folds,
    find_plan,
    leave_one_speaker_out,
    load_plans,
    named_plans,
    paper_plan,
    transfer_plan,
    write_plans,
)
from shards.verify import verify_corpus

ESD_SPEAKERS = {f"{n:04d}": {"language": "zh" if n <= 10 else "en", "gender": "unknown"} for n in range(1, 21)}

speaker_sets = st.dictionaries(
    keys=st.integers(1, 40).map(lambda n: f"{n:04d}"),
    values=st.builds(lambda language: {"language": language, "gender": "unknown"}, st.sampled_from(["en", "zh"])),
    max_size=25,
)


def _held_out(plan: SplitPlan) -> set[str]:
    return {s for group in plan.eval_sets.values() for s in group}


def _every_plan(speakers: dict) -> list[SplitPlan]:
    """Every plan the builders make for these speakers; a builder may only decline with a plain ValueError."""
    plans = []
    for build in (
        lambda: [paper_plan(speakers)],
        lambda: [transfer_plan(speakers)],
        lambda: leave_one_speaker_out(speakers),
        lambda: emobox_folds(speakers),
    ):
        try:
            plans.extend(build())
        except SpeakerLeakError:
            raise
        except ValueError:
            continue
    assert plans == [p for family in named_plans(speakers).values() for p in family]
    return plans


@settings(max_examples=150, deadline=None)
@given(speaker_sets)
def test_no_plan_ever_puts_a_test_speaker_in_training(speakers):
    for plan in _every_plan(speakers):
        assert not _held_out(plan) & set(plan.train_speakers), plan
        assert _held_out(plan) and plan.train_speakers
        assert set(plan.train_speakers) | _held_out(plan) <= set(speakers)
        for name, group in plan.eval_sets.items():  # test_en holds English speakers, test_zh Mandarin
            assert {speakers[s]["language"] for s in group} == {name.removeprefix("test_")}
        assert SplitPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@settings(max_examples=100, deadline=None)
@given(speaker_sets, st.data())
def test_a_plan_that_leaks_is_refused(speakers, data):
    if not speakers:
        return
    leaked = data.draw(st.sampled_from(sorted(speakers)))
    with pytest.raises(SpeakerLeakError, match=leaked):
        SplitPlan("leaky", tuple(sorted(speakers)), {"test": (leaked,)})


def test_the_esd_plans():
    paper = paper_plan(ESD_SPEAKERS)
    assert paper.train_speakers == ("0011", "0012", "0013", "0014")
    assert paper.eval_sets == {"test_en": ("0015",), "test_zh": ("0002",)}
    assert transfer_plan(ESD_SPEAKERS).train_speakers == ("0011", "0012", "0013", "0014", "0001")
    assert len(leave_one_speaker_out(ESD_SPEAKERS)) == 20
    folds = emobox_folds(ESD_SPEAKERS)
    assert [sorted(_held_out(f)) for f in folds] == [sorted(s) for s in EMOBOX_ESD_TEST_SPEAKERS.values()]
    assert all(len(f.train_speakers) == 16 for f in folds)


def test_plans_are_written_next_to_the_data_and_refused_if_tampered(tmp_path):
    written = write_plans(tmp_path, ESD_SPEAKERS)
    assert load_plans(tmp_path) == written
    assert find_plan(written, "emobox-3").eval_sets == {"test_zh": ("0003", "0004", "0006", "0009")}
    with pytest.raises(KeyError, match="known plans"):
        find_plan(written, "emobox-9")
    document = json.loads((tmp_path / SPLITS_NAME).read_text())
    document["plans"]["paper"][0]["train_speakers"].append("0015")
    (tmp_path / SPLITS_NAME).write_text(json.dumps(document))
    with pytest.raises(SpeakerLeakError, match="0015"):
        load_plans(tmp_path)


def test_the_demo_corpus_carries_its_plans_and_verifies(demo_dir):
    plans = load_plans(demo_dir)
    assert set(plans) == {"paper", "transfer", "loso", "emobox"}
    assert (demo_dir / SPLITS_NAME).exists()
    assert verify_corpus(demo_dir) == []
