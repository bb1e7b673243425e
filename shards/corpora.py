"""Named ingesters: each reads one public release in its own layout and naming.

Each `scan_<corpus>(root, ...)` finds files at any depth below `root` (so a copy extracted into
an extra folder reads the same), takes label, speaker and split from the release's file names or
label files as its documentation describes them, and names every file it cannot use. Labels are
the release's own codes spelled out, in the order of its documentation. Sources followed:

- RAVDESS: Livingstone & Russo 2018, PLoS ONE 13(5) e0196391, and the Zenodo record 1188976
  ("File naming convention"): `Actor_NN/MM-VV-EE-II-SS-RR-AA.wav`.
- CREMA-D: Cao et al. 2014 and the release README (github.com/CheyneyComputerScience/CREMA-D):
  `AudioWAV/AAAA_SSS_EEE_LL.wav`, `VideoDemographics.csv`.
- EmoDB: the database documentation (emodb.bilderbar.info/docu), Burkhardt et al. 2005:
  `wav/SSTTTEV.wav`, ten speakers with their sex.
- IEMOCAP: the release README (IEMOCAP_full_release/README.txt) and Busso et al. 2008:
  `SessionN/sentences/wav/<dialog>/<utterance>.wav`, `SessionN/dialog/EmoEvaluation/<dialog>.txt`.
- MSP-Podcast: the release readme.txt (Lotfian & Busso 2019; release 1.x):
  `Labels/labels_consensus.csv` (FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set), `Audios/`.

Where a release has dimensional labels (MSP-Podcast's EmoAct/EmoVal/EmoDom, IEMOCAP's [v, a, d]) the
scan keeps them per clip and declares their scale (CorpusScan.dimensions); the shards get a column each.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shards.corpus import CorpusScan, Entry, normalize_gender

# --- walking a release ---------------------------------------------------------------------------


def _files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Every file below root with one of the suffixes, sorted; macOS metadata left out."""
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if d != "__MACOSX")
        for name in sorted(names):
            if name.lower().endswith(suffixes) and not name.startswith("._"):
                yield Path(folder, name)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _root(root: str | Path, name: str) -> Path:
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the folder {name} was extracted into")
    return root


# --- RAVDESS -------------------------------------------------------------------------------------

RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.wav$", re.IGNORECASE)
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def scan_ravdess(root: str | Path) -> CorpusScan:
    """Speech audio of 24 actors; song files (vocal channel 02) and video modalities are skipped."""
    root = _root(root, "RAVDESS")
    scan = CorpusScan("ravdess", root, tuple(RAVDESS_EMOTIONS.values()))
    for path in _files(root, (".wav",)):
        rel = _rel(root, path)
        name = RAVDESS_NAME.match(path.name)
        if not name:
            scan.skipped.append({"path": rel, "reason": "not a RAVDESS file name (MM-VV-EE-II-SS-RR-AA.wav)"})
            continue
        modality, channel, emotion, _intensity, statement, _repetition, actor = name.groups()
        if channel == "02":
            scan.skipped.append({"path": rel, "reason": "song file (vocal channel 02): only speech is ingested"})
        elif channel != "01" or modality != "03" or emotion not in RAVDESS_EMOTIONS or not 1 <= int(actor) <= 24:
            scan.skipped.append({"path": rel, "reason": "identifiers outside RAVDESS's documented codes"})
        else:
            scan.entries.append(
                Entry(
                    origin=rel,
                    path=path,
                    rel=rel,
                    utterance_id=path.stem,
                    label=RAVDESS_EMOTIONS[emotion],
                    speaker=f"Actor_{actor}",
                    language="en",
                    transcript=RAVDESS_STATEMENTS.get(statement, ""),
                    gender="M" if int(actor) % 2 else "F",  # odd actors are male
                )
            )
    return scan


# --- CREMA-D -------------------------------------------------------------------------------------

CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$")
CREMAD_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
CREMAD_LEVELS = {"LO", "MD", "HI", "XX"}


def scan_cremad(root: str | Path) -> CorpusScan:
    """91 actors (1001-1091); sex from VideoDemographics.csv when the copy has it."""
    root = _root(root, "CREMA-D")
    scan = CorpusScan("cremad", root, tuple(CREMAD_EMOTIONS.values()))
    genders = _cremad_genders(root)
    scan.notes["demographics"] = bool(genders)
    for path in _files(root, (".wav",)):
        rel = _rel(root, path)
        name = CREMAD_NAME.match(path.name)
        if not name or name[3] not in CREMAD_EMOTIONS or name[4] not in CREMAD_LEVELS:
            scan.skipped.append({"path": rel, "reason": "not a CREMA-D file name (ActorID_SEN_EMO_LV.wav)"})
            continue
        actor, sentence, emotion, _level = name.groups()
        scan.entries.append(
            Entry(
                origin=rel,
                path=path,
                rel=rel,
                utterance_id=path.stem,
                label=CREMAD_EMOTIONS[emotion],
                speaker=actor,
                language="en",
                transcript=CREMAD_SENTENCES.get(sentence, ""),
                gender=genders.get(actor, "unknown"),
            )
        )
    return scan


def _cremad_genders(root: Path) -> dict[str, str]:
    for path in _files(root, ("videodemographics.csv",)):
        with open(path, newline="", encoding="utf-8-sig") as f:
            return {row["ActorID"].strip(): normalize_gender(row.get("Sex")) for row in csv.DictReader(f)}
    return {}


# --- EmoDB ---------------------------------------------------------------------------------------

EMODB_NAME = re.compile(r"^(\d{2})([ab]\d{2})([WLEAFTN])([a-z])\.wav$")
# Position 6: the initial of the German emotion word.
EMODB_EMOTIONS = {
    "W": "anger",  # Ärger (Wut)
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}
EMODB_SPEAKERS = {
    "03": "M",
    "08": "F",
    "09": "F",
    "10": "M",
    "11": "M",
    "12": "M",
    "13": "F",
    "14": "F",
    "15": "M",
    "16": "F",
}


def scan_emodb(root: str | Path) -> CorpusScan:
    """Berlin EmoDB: 10 speakers, German."""
    root = _root(root, "EmoDB")
    scan = CorpusScan("emodb", root, tuple(EMODB_EMOTIONS.values()))
    for path in _files(root, (".wav",)):
        rel = _rel(root, path)
        name = EMODB_NAME.match(path.name)
        if not name or name[1] not in EMODB_SPEAKERS:
            scan.skipped.append({"path": rel, "reason": "not an EmoDB file name (SSTTTEV.wav, speaker 03-16)"})
            continue
        speaker, _text, emotion, _version = name.groups()
        scan.entries.append(
            Entry(
                origin=rel,
                path=path,
                rel=rel,
                utterance_id=path.stem,
                label=EMODB_EMOTIONS[emotion],
                speaker=speaker,
                language="de",
                gender=EMODB_SPEAKERS[speaker],
            )
        )
    return scan


# --- IEMOCAP -------------------------------------------------------------------------------------

IEMOCAP_UTTERANCE = re.compile(r"^(Ses0[1-5])([FM])_(.+)_([FM])(\d{3})$")
IEMOCAP_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]?")
IEMOCAP_TRANSCRIPT = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s*(.*)$")
IEMOCAP_ALL = ("neu", "hap", "ang", "sad", "exc", "fru", "sur", "fea", "dis")
IEMOCAP_FOUR = ("neu", "hap", "ang", "sad")
# The summary line's [V, A, D]: the evaluators' mean valence, activation and dominance, each on a 1-5 scale.
IEMOCAP_DIMENSIONS = {"arousal": [1.0, 5.0], "valence": [1.0, 5.0], "dominance": [1.0, 5.0]}
IEMOCAP_NO_LABEL = {"xxx": "no majority label ('xxx')", "oth": "labelled 'other' ('oth')"}


@dataclass(frozen=True)
class Turn:
    utterance: str
    dialog: str
    start: float
    end: float
    label: str
    origin: str  # EmoEvaluation file and line
    dimensions: dict[str, float] = field(default_factory=dict)  # from the line's [V, A, D] (empty: unreadable)


def scan_iemocap(
    root: str | Path, classes: str = "four", merge_excited: bool = True, skip_overlapping: bool = False
) -> CorpusScan:
    """IEMOCAP's 5 sessions; utterances and labels from the EmoEvaluation files.

    classes: 'four' (neu, hap, ang, sad: the usual set) or 'all' (nine categories); merge_excited
    folds 'exc' into 'hap' (the usual 4-class practice). 'xxx' and 'oth' are never a class.
    Speakers are session + gender ('Ses01F'). Turns overlapping the other speaker's turn in time
    are kept (each has its own microphone channel) and listed, or skipped with skip_overlapping.
    """
    if classes not in ("four", "all"):
        raise ValueError(f"classes must be 'four' or 'all', not {classes!r}")
    root = _root(root, "IEMOCAP")
    labels = IEMOCAP_FOUR if classes == "four" else tuple(e for e in IEMOCAP_ALL if not (merge_excited and e == "exc"))
    scan = CorpusScan("iemocap", root, labels, dimensions=dict(IEMOCAP_DIMENSIONS))
    scan.notes.update(classes=classes, merge_excited=merge_excited, skip_overlapping=skip_overlapping)
    turns, transcripts = _iemocap_label_files(root, scan)
    wavs = {path.stem: path for path in _files(root, (".wav",)) if "sentences" in path.parts}
    overlapping = _overlapping_turns(turns)
    scan.notes["overlapping_turns"] = overlapping
    for utterance, turn in sorted(turns.items()):
        path = wavs.pop(utterance, None)
        name = IEMOCAP_UTTERANCE.match(utterance)
        reason = _iemocap_reason(turn, labels, merge_excited, path, name)
        if reason is None and skip_overlapping and utterance in overlapping:
            reason = f"overlaps {overlapping[utterance]} in time (--skip-overlapping)"
        if reason:
            scan.skipped.append({"path": _rel(root, path) if path else turn.origin, "reason": reason})
            continue
        session, speaker_gender = name[1], name[4]
        label = "hap" if merge_excited and turn.label == "exc" else turn.label
        scan.entries.append(
            Entry(
                origin=turn.origin,
                path=path,
                rel=_rel(root, path),
                utterance_id=utterance,
                label=label,
                speaker=f"{session}{speaker_gender}",
                language="en",
                transcript=transcripts.get(utterance, ""),
                gender=speaker_gender,
                session=session,
                dimensions=turn.dimensions,
            )
        )
    for _utterance, path in sorted(wavs.items()):
        scan.skipped.append({"path": _rel(root, path), "reason": "no line in any EmoEvaluation file"})
    return scan


def _iemocap_reason(turn: Turn, labels: tuple[str, ...], merge_excited: bool, path: Path | None, name) -> str | None:
    if path is None:
        return f"{turn.utterance}: no audio file in SessionN/sentences/wav"
    if name is None:
        return f"utterance name {turn.utterance!r} is not SesNNG_<dialog>_GNNN"
    if turn.label in IEMOCAP_NO_LABEL:
        return IEMOCAP_NO_LABEL[turn.label]
    label = "hap" if merge_excited and turn.label == "exc" else turn.label
    if label not in labels:
        return f"label {turn.label!r} outside the {'4-class' if len(labels) == 4 else 'chosen'} set {list(labels)}"
    return None


def _iemocap_label_files(root: Path, scan: CorpusScan) -> tuple[dict[str, Turn], dict[str, str]]:
    turns: dict[str, Turn] = {}
    transcripts: dict[str, str] = {}
    for path in _files(root, (".txt",)):
        folder = path.parent.name
        if folder == "EmoEvaluation":
            _read_emo_evaluation(root, path, turns)
        elif folder == "transcriptions":
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                match = IEMOCAP_TRANSCRIPT.match(line.strip())
                if match:
                    transcripts[match[1]] = match[2]
    if not turns:
        raise FileNotFoundError(f"no EmoEvaluation/*.txt with labelled turns under {root}")
    return turns, transcripts


def _read_emo_evaluation(root: Path, path: Path, turns: dict[str, Turn]) -> None:
    rel = _rel(root, path)
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        match = IEMOCAP_LINE.match(line.strip())
        if match:  # the summary lines; per-annotator lines (C-E1:, A-E2:) follow each and are not labels
            start, end, utterance, label = float(match[1]), float(match[2]), match[3], match[4]
            vad = _iemocap_vad(match[5])
            turns.setdefault(utterance, Turn(utterance, path.stem, start, end, label, f"{rel}:{number}", vad))


def _iemocap_vad(text: str | None) -> dict[str, float]:
    """'2.5000, 3.0000, 3.5000' (valence, activation, dominance) -> the three dimensions; {} if unreadable."""
    try:
        valence, arousal, dominance = (float(v) for v in (text or "").split(","))
    except ValueError:
        return {}
    return {"arousal": arousal, "valence": valence, "dominance": dominance}


def _overlapping_turns(turns: dict[str, Turn]) -> dict[str, str]:
    """utterance -> the other speaker's turn it overlaps in time (the first one), per dialog."""
    by_dialog: dict[str, list[Turn]] = {}
    for turn in turns.values():
        by_dialog.setdefault(turn.dialog, []).append(turn)
    overlaps: dict[str, str] = {}
    for dialog_turns in by_dialog.values():
        dialog_turns.sort(key=lambda t: t.start)
        for i, turn in enumerate(dialog_turns):
            for other in dialog_turns[i + 1 :]:
                if other.start >= turn.end:
                    break
                if _gender_of(other) != _gender_of(turn):
                    overlaps.setdefault(turn.utterance, other.utterance)
                    overlaps.setdefault(other.utterance, turn.utterance)
    return dict(sorted(overlaps.items()))


def _gender_of(turn: Turn) -> str:
    name = IEMOCAP_UTTERANCE.match(turn.utterance)
    return name[4] if name else turn.utterance


# --- MSP-Podcast ---------------------------------------------------------------------------------

MSP_EMOTIONS = {
    "A": "angry",
    "S": "sad",
    "H": "happy",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "N": "neutral",
}
MSP_NO_CLASS = {"O": "primary emotion 'other' (O)", "X": "no agreement on a primary emotion (X)"}
MSP_SPLITS = {"train": "train", "development": "development", "test1": "test1", "test2": "test2", "test3": "test3"}
MSP_UNKNOWN_SPEAKER = "unknown"
# labels_consensus.csv's attribute columns (the mean of the annotators' ratings, each on a 1-7 scale).
MSP_DIMENSIONS = {"EmoAct": "arousal", "EmoVal": "valence", "EmoDom": "dominance"}
MSP_SCALE = [1.0, 7.0]


def scan_msp_podcast(root: str | Path) -> CorpusScan:
    """MSP-Podcast: labels_consensus.csv, its 8 primary classes and official (speaker-independent) splits.

    Rows whose audio file is absent (a partial download, a later release's labels) are named and
    skipped. Speakers are SpkrID; rows with an unknown speaker get one pseudo-speaker per split
    ('unknown-test1'), so they can never cross a train/test boundary.
    """
    root = _root(root, "MSP-Podcast")
    # Early releases spell the file labels_concensus.csv.
    labels_csv = next(_files(root, ("labels_consensus.csv", "labels_concensus.csv")), None)
    if labels_csv is None:
        raise FileNotFoundError(f"no Labels/labels_consensus.csv under {root}")
    audio = {path.name: path for path in _files(root, (".wav",))}
    scan = CorpusScan("msp_podcast", root, tuple(MSP_EMOTIONS.values()), official_splits=True)
    scan.notes["labels_file"] = _rel(root, labels_csv)
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c for c in MSP_DIMENSIONS if c in (reader.fieldnames or [])]
        scan.dimensions = {MSP_DIMENSIONS[c]: list(MSP_SCALE) for c in columns}
        for row in reader:
            _msp_row(scan, reader.line_num, row, audio)
    return scan


def _msp_dimensions(row: dict) -> dict[str, float]:
    """The row's EmoAct, EmoVal, EmoDom as arousal, valence, dominance (an empty or unreadable cell: left out)."""
    values = {}
    for column, name in MSP_DIMENSIONS.items():
        try:
            values[name] = float((row.get(column) or "").strip())
        except ValueError:
            continue
    return values


def _msp_row(scan: CorpusScan, number: int, row: dict, audio: dict[str, Path]) -> None:
    name = (row.get("FileName") or "").strip()
    emotion = (row.get("EmoClass") or "").strip()
    split = MSP_SPLITS.get((row.get("Split_Set") or "").strip().lower())
    path = audio.get(name)
    reason = None
    if emotion in MSP_NO_CLASS:
        reason = MSP_NO_CLASS[emotion]
    elif emotion not in MSP_EMOTIONS:
        reason = f"unknown EmoClass {emotion!r}"
    elif split is None:
        reason = f"unknown Split_Set {row.get('Split_Set')!r}"
    elif path is None:
        reason = f"no audio file {name or '(empty FileName)'} in the copy"
    if reason:
        scan.skipped.append({"line": number, "path": name, "reason": reason})
        return
    speaker = (row.get("SpkrID") or "").strip()
    if not speaker or speaker.lower() == MSP_UNKNOWN_SPEAKER:
        speaker = f"{MSP_UNKNOWN_SPEAKER}-{split}"
    scan.entries.append(
        Entry(
            origin=f"line {number}",
            path=path,
            rel=_rel(scan.root, path),
            utterance_id=Path(name).stem,
            label=MSP_EMOTIONS[emotion],
            speaker=speaker,
            language="en",
            split=split,
            gender=normalize_gender(row.get("Gender")),
            dimensions=_msp_dimensions(row) if scan.dimensions else {},
        )
    )


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    name: str
    title: str
    scan: Callable[..., CorpusScan]
    conventions: str  # labels, speakers and splits, for `ingest list` and the README


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            "ravdess",
            "RAVDESS speech audio (Livingstone & Russo 2018), 24 actors, English",
            scan_ravdess,
            "labels: 8 emotions from the 3rd identifier; speaker Actor_NN (odd male); song files skipped",
        ),
        Release(
            "cremad",
            "CREMA-D (Cao et al. 2014), 91 actors, English",
            scan_cremad,
            "labels: ANG DIS FEA HAP NEU SAD; speaker = ActorID 1001-1091; sex from VideoDemographics.csv",
        ),
        Release(
            "emodb",
            "Berlin EmoDB (Burkhardt et al. 2005), 10 speakers, German",
            scan_emodb,
            "labels: 7 emotions from the 6th letter (W L E A F T N); speaker = first two digits",
        ),
        Release(
            "iemocap",
            "IEMOCAP (Busso et al. 2008), 5 sessions, English",
            scan_iemocap,
            "labels: EmoEvaluation (4-class neu hap ang sad, exc merged into hap by default; [v, a, d] 1-5 kept); "
            "speaker = session+gender; xxx/oth skipped; overlapping turns listed; plans: leave one session out",
        ),
        Release(
            "msp_podcast",
            "MSP-Podcast (Lotfian & Busso 2019), labels_consensus.csv",
            scan_msp_podcast,
            "labels: 8 primary classes (O, X skipped); arousal, valence, dominance from EmoAct, EmoVal, EmoDom "
            "(1-7); speaker = SpkrID; official Train/Development/Test1/Test2 splits",
        ),
    )
}
