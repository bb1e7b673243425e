"""Speaker-disjoint split plans: which speakers train, which are held out for testing.

A plan never lets a test speaker into training; building one that would is an error.
Plans are data (`SplitPlan`), so they can be written next to the shards as JSON and read back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shards.writer import read_manifest, write_atomically

SPLITS_NAME = "splits.json"
SPLITS_FORMAT = "emotion-sweep-splits/1"

# EmoBox (Ma et al. 2024) ESD folds: the test speakers of each fold.
EMOBOX_ESD_TEST_SPEAKERS: dict[int, tuple[str, ...]] = {
    1: ("0005", "0011", "0016", "0018"),
    2: ("0012", "0014", "0015", "0019"),
    3: ("0003", "0004", "0006", "0009"),
    4: ("0007", "0008", "0013", "0020"),
    5: ("0001", "0002", "0010", "0017"),
}


class SpeakerLeakError(ValueError):
    """A plan put a held-out speaker into training."""


@dataclass(frozen=True)
class SplitPlan:
    name: str
    train_speakers: tuple[str, ...]
    eval_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. {"test_en": ("0015",)}

    def __post_init__(self) -> None:
        held_out = {s for speakers in self.eval_sets.values() for s in speakers}
        leaked = held_out & set(self.train_speakers)
        if leaked:
            raise SpeakerLeakError(
                f"plan {self.name!r} puts held-out speaker(s) {sorted(leaked)} in training; "
                "test speakers must never be seen in training"
            )
        if not self.train_speakers:
            raise ValueError(f"plan {self.name!r} has no training speakers")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SplitPlan:
        return cls(
            values["name"],
            tuple(values["train_speakers"]),
            {k: tuple(v) for k, v in values.get("eval_sets", {}).items()},
        )

    def as_config(self) -> dict:
        """The TrialConfig values this plan sets."""
        return {"train_speakers": self.train_speakers, "eval_sets": dict(self.eval_sets)}


def by_language(speakers: dict[str, dict]) -> dict[str, list[str]]:
    """speaker metadata (manifest 'speakers') -> {"en": [...], "zh": [...]} in id order."""
    groups: dict[str, list[str]] = {}
    for speaker in sorted(speakers):
        groups.setdefault(speakers[speaker]["language"], []).append(speaker)
    return groups


def paper_plan(speakers: dict[str, dict]) -> SplitPlan:
    """The paper's plan: English 4 speakers train/validate, the 5th is tested; Mandarin 1 and 1.

    The paper used 5 of ESD's 10 English and 2 of its 10 Mandarin speakers; we take the first ones
    by id. Mandarin training speakers are listed under `zh_train_speakers` by `transfer_plan`.
    """
    groups = by_language(speakers)
    english, mandarin = groups.get("en", []), groups.get("zh", [])
    if len(english) < 5:
        raise ValueError(f"the paper's plan needs 5 English speakers; the corpus has {len(english)}")
    eval_sets = {"test_en": (english[4],)}
    if len(mandarin) >= 2:
        eval_sets["test_zh"] = (mandarin[1],)
    return SplitPlan("paper", tuple(english[:4]), eval_sets)


def transfer_plan(speakers: dict[str, dict]) -> SplitPlan:
    """The paper's transfer setting: the 4 English training speakers plus 1 Mandarin speaker train."""
    paper = paper_plan(speakers)
    mandarin = by_language(speakers).get("zh", [])
    if len(mandarin) < 2:
        raise ValueError(f"transfer needs 2 Mandarin speakers; the corpus has {len(mandarin)}")
    return SplitPlan("transfer", paper.train_speakers + (mandarin[0],), paper.eval_sets)


def leave_one_speaker_out(speakers: dict[str, dict], language: str | None = None) -> list[SplitPlan]:
    """One fold per speaker (of `language`, or all): that speaker is tested, the rest of the language train."""
    groups = by_language(speakers)
    plans = []
    for lang, members in sorted(groups.items()):
        if language is not None and lang != language:
            continue
        for held_out in members:
            train = tuple(s for s in members if s != held_out)
            plans.append(SplitPlan(f"loso-{held_out}", train, {f"test_{lang}": (held_out,)}))
    return plans


def emobox_folds(speakers: dict[str, dict]) -> list[SplitPlan]:
    """EmoBox's 5 ESD folds: 4 test speakers each, every other speaker trains."""
    plans = []
    for fold, test_speakers in EMOBOX_ESD_TEST_SPEAKERS.items():
        present = [s for s in test_speakers if s in speakers]
        if not present:
            continue
        eval_sets: dict[str, tuple[str, ...]] = {}
        for s in present:
            key = f"test_{speakers[s]['language']}"
            eval_sets[key] = eval_sets.get(key, ()) + (s,)
        train = tuple(s for s in sorted(speakers) if s not in present)
        plans.append(SplitPlan(f"emobox-{fold}", train, eval_sets))
    return plans


def named_plans(speakers: dict[str, dict]) -> dict[str, list[SplitPlan]]:
    """Every plan family a corpus supports: {'paper': [..], 'transfer': [..], 'loso': [..], 'emobox': [..]}."""
    families: dict[str, list[SplitPlan]] = {}
    for name, build in (
        ("paper", lambda: [paper_plan(speakers)]),
        ("transfer", lambda: [transfer_plan(speakers)]),
        ("loso", lambda: leave_one_speaker_out(speakers)),
        ("emobox", lambda: emobox_folds(speakers)),
    ):
        try:
            plans = build()
        except SpeakerLeakError:
            raise  # a bug in a builder, never "this corpus does not support the family"
        except ValueError:
            continue
        if plans:
            families[name] = plans
    return families


def _test_sets(speakers: dict[str, dict], held_out: list[str]) -> dict[str, tuple[str, ...]]:
    """Held-out speakers grouped into one eval set per language: test_<lang>."""
    eval_sets: dict[str, tuple[str, ...]] = {}
    for s in held_out:
        key = f"test_{speakers[s]['language']}"
        eval_sets[key] = eval_sets.get(key, ()) + (s,)
    return eval_sets


def speaker_folds(speakers: dict[str, dict], k: int = 5) -> list[SplitPlan]:
    """k speaker-disjoint folds, stratified by language and gender: speakers sorted by (language,
    gender, id) are dealt round-robin, so each fold tests a like share of every language x gender."""
    if k < 2 or len(speakers) < k + 1:
        raise ValueError(f"{k} speaker folds need at least {k + 1} speakers; the corpus has {len(speakers)}")
    ordered = sorted(speakers, key=lambda s: (speakers[s]["language"], speakers[s].get("gender", "unknown"), s))
    plans = []
    for fold in range(k):
        held_out = ordered[fold::k]
        train = tuple(s for s in sorted(speakers) if s not in held_out)
        plans.append(SplitPlan(f"fold-{fold + 1}", train, _test_sets(speakers, sorted(held_out))))
    return plans


def leave_one_session_out(speakers: dict[str, dict]) -> list[SplitPlan]:
    """One fold per recording session (IEMOCAP's 5): both speakers of the session are tested."""
    sessions: dict[str, list[str]] = {}
    for s in sorted(speakers):
        if speakers[s].get("session"):
            sessions.setdefault(speakers[s]["session"], []).append(s)
    if len(sessions) < 2:
        raise ValueError("leave-one-session-out needs speakers of at least 2 sessions")
    return [
        SplitPlan(f"session-{session}", tuple(s for s in sorted(speakers) if s not in held), _test_sets(speakers, held))
        for session, held in sorted(sessions.items())
    ]


def official_plan(speakers: dict[str, dict]) -> SplitPlan:
    """A release's own speaker-independent partition (speaker metadata 'official_split'): the
    'train' speakers train, every other partition is an eval set of its own name."""
    groups: dict[str, list[str]] = {}
    for s in sorted(speakers):
        if speakers[s].get("official_split"):
            groups.setdefault(speakers[s]["official_split"], []).append(s)
    if "train" not in groups or len(groups) < 2:
        raise ValueError("the corpus has no speaker-independent official split")
    return SplitPlan(
        "official", tuple(groups.pop("train")), {name: tuple(members) for name, members in sorted(groups.items())}
    )


def corpus_plans(speakers: dict[str, dict], k: int = 5) -> dict[str, list[SplitPlan]]:
    """The plan families of a corpus other than ESD: 'loso', 'folds', 'sessions', 'official'."""
    families: dict[str, list[SplitPlan]] = {}
    for name, build in (
        (
            "loso",
            lambda: [
                p
                for lang, members in by_language(speakers).items()
                if len(members) > 1
                for p in leave_one_speaker_out(speakers, lang)
            ],
        ),
        ("folds", lambda: speaker_folds(speakers, k)),
        ("sessions", lambda: leave_one_session_out(speakers)),
        ("official", lambda: [official_plan(speakers)]),
    ):
        try:
            plans = build()
        except SpeakerLeakError:
            raise
        except ValueError:
            continue
        if plans:
            families[name] = plans
    return families


def write_plans(
    data_dir: str | Path, speakers: dict[str, dict], plans: dict[str, list[SplitPlan]] | None = None
) -> dict[str, list[SplitPlan]]:
    """Write the plans (default: every ESD-style family the speakers support) to `<data_dir>/splits.json`."""
    plans = named_plans(speakers) if plans is None else plans
    document = {
        "format": SPLITS_FORMAT,
        "speakers": {s: speakers[s] for s in sorted(speakers)},
        "plans": {family: [p.to_dict() for p in members] for family, members in plans.items()},
    }
    write_atomically(Path(data_dir) / SPLITS_NAME, json.dumps(document, indent=1, ensure_ascii=False).encode())
    return plans


def load_plans(data_dir: str | Path) -> dict[str, list[SplitPlan]]:
    """The plans stored next to the data (built from the manifest's speakers if there is no splits.json).

    Every plan is re-validated on load: a hand-edited file that leaks a test speaker raises
    SpeakerLeakError.
    """
    path = Path(data_dir) / SPLITS_NAME
    if not path.exists():
        return named_plans(read_manifest(Path(data_dir))["speakers"])
    document = json.loads(path.read_text())
    return {family: [SplitPlan.from_dict(p) for p in members] for family, members in document["plans"].items()}


def find_plan(plans: dict[str, list[SplitPlan]], name: str) -> SplitPlan:
    """A plan by its name ('paper', 'loso-0011', 'emobox-3', ...)."""
    for members in plans.values():
        for plan in members:
            if plan.name == name:
                return plan
    known = ", ".join(p.name for members in plans.values() for p in members)
    raise KeyError(f"no split plan named {name!r}; known plans: {known}")
