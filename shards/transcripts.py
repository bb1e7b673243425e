"""ESD transcripts and speaker-info text: decoded per file, parsed line by line.

Copies in circulation store `SSSS.txt` as UTF-8, UTF-16 with a BOM, GB2312/GBK or Latin-1, with
`id<TAB>text<TAB>emotion` lines where the last tab is sometimes a space, and Mandarin files name
the emotions in Chinese. Detection order: a BOM; UTF-16 without one (NUL bytes of ASCII
characters); strict UTF-8; then GB18030 (a superset of GB2312 and GBK) against Latin-1, whichever
parses more lines into a known emotion, the speaker's language breaking a tie.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

# Every way an ESD transcript names an emotion -> the schema's name.
CHINESE_EMOTIONS = {"中立": "Neutral", "生气": "Angry", "快乐": "Happy", "伤心": "Sad", "惊喜": "Surprise"}
ENGLISH_EMOTIONS = {
    "neutral": "Neutral",
    "angry": "Angry",
    "happy": "Happy",
    "sad": "Sad",
    "surprise": "Surprise",
    "surprised": "Surprise",
}
UTTERANCE_LINE = re.compile(r"^\s*(\d{4}_\d{6})[\t ]+(.*)$")
SPEAKER_LINE = re.compile(r"^\s*(\d{4})\b(.*)$")
GENDER_WORD = re.compile(r"\b(female|male)\b", re.IGNORECASE)
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class TranscriptLine:
    text: str
    emotion: str | None  # None when the line names no emotion we know


@dataclass
class Transcript:
    encoding: str
    lines: dict[str, TranscriptLine] = field(default_factory=dict)  # utterance id -> line
    unparsed: list[str] = field(default_factory=list)  # "line N: ..." for lines that are not utterances
    duplicates: list[str] = field(default_factory=list)  # ids given twice (the first line wins)


def emotion_name(word: str, strict_case: bool = False) -> str | None:
    """The schema's emotion for an English or Chinese name; None if it is not one.

    strict_case: only ESD's own spelling ("Sad", not "sad"), for a label that might be the last
    word of the sentence rather than a column.
    """
    word = word.strip()
    if word in CHINESE_EMOTIONS:
        return CHINESE_EMOTIONS[word]
    name = ENGLISH_EMOTIONS.get(word.lower())
    if name is None or (strict_case and word not in (name, "Surprised")):
        return None
    return name


def parse_line(rest: str) -> TranscriptLine:
    """What follows the id: 'text<TAB>emotion', 'text emotion', or just 'text'."""
    rest = rest.strip()
    head, tab, tail = rest.rpartition("\t")
    if tab and emotion_name(tail):
        return TranscriptLine(head.strip(), emotion_name(tail))
    words = rest.rsplit(None, 1)
    if len(words) == 2 and emotion_name(words[1], strict_case=True):
        return TranscriptLine(words[0].strip(), emotion_name(words[1], strict_case=True))
    return TranscriptLine(rest.replace("\t", " "), None)


def parse_transcript(text: str, encoding: str) -> Transcript:
    transcript = Transcript(encoding)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        match = UTTERANCE_LINE.match(line)
        if match is None:
            transcript.unparsed.append(f"line {number}: {line.strip()[:80]}")
            continue
        if match[1] in transcript.lines:
            transcript.duplicates.append(match[1])
            continue
        transcript.lines[match[1]] = parse_line(match[2])
    return transcript


def read_transcript(data: bytes, language: str | None) -> Transcript:
    """Decode one transcript file (see the module doc for how) and parse it."""
    text, encoding = next(_candidates(data, language))
    return parse_transcript(text, encoding)


def _candidates(data: bytes, language: str | None):
    """The decoding to use, first: (text, encoding name)."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            yield _decode(data, codec)
            return
    utf16 = _bomless_utf16(data)
    if utf16:
        yield _decode(data, utf16)
        return
    try:
        yield data.decode("utf-8"), "utf-8"
        return
    except UnicodeDecodeError:
        pass
    options = [_latin(data)]
    gb = _gb(data)
    if gb is not None:
        options.append(gb)
    # More lines with a recognised emotion wins; on a tie the speaker's language decides, or else
    # the bytes do: GB2312 text is runs of two-byte characters, Latin-1 text has lone accented letters.
    prefer_gb = language == "zh" if language in ("zh", "en") else _high_bytes_come_in_runs(data)

    def score(option: tuple[str, str]) -> tuple[int, bool]:
        text, encoding = option
        labelled = sum(1 for line in parse_transcript(text, encoding).lines.values() if line.emotion)
        return labelled, encoding.startswith("gb") == prefer_gb

    yield max(options, key=score)


def _decode(data: bytes, codec: str) -> tuple[str, str]:
    try:
        return data.decode(codec), codec
    except UnicodeDecodeError:
        return data.decode(codec, errors="replace"), f"{codec} (with replacement characters)"


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM shows as NUL bytes on one side of every ASCII character (ids, tabs)."""
    sample = data[:4096]
    if len(sample) < 4 or sample.count(0) < len(sample) // 4:
        return None
    odd_zeros = sample[1::2].count(0)
    even_zeros = sample[0::2].count(0)
    return "utf-16-le" if odd_zeros > even_zeros else "utf-16-be"


def _gb(data: bytes) -> tuple[str, str] | None:
    for codec in ("gb2312", "gbk", "gb18030"):  # report the narrowest that fits
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            continue
    return None


def _latin(data: bytes) -> tuple[str, str]:
    # Bytes 0x80-0x9F are control characters in Latin-1 but curly quotes and dashes in cp1252.
    if any(0x80 <= b <= 0x9F for b in data):
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


def _high_bytes_come_in_runs(data: bytes) -> bool:
    """Whether most bytes >= 0x80 sit next to another one (CJK in a legacy encoding) rather than alone."""
    high = [i for i, b in enumerate(data) if b >= 0x80]
    if not high:
        return False
    flags = set(high)
    in_runs = sum(1 for i in high if i - 1 in flags or i + 1 in flags)
    return in_runs >= len(high) / 2


def is_chinese_text(text: str) -> bool:
    """Whether a transcript is mostly CJK ideographs (to tell the language of a non-ESD speaker id)."""
    ideographs = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
    letters = sum(1 for c in text if c.isascii() and c.isalpha())
    return ideographs > letters


def read_speaker_info(data: bytes) -> dict[str, str]:
    """'0001: Chinese Female'-style lines (ESD's ReadMe) -> {speaker: 'F' | 'M'}."""
    text, _ = next(_candidates(data, None))
    genders = {}
    for line in text.splitlines():
        match = SPEAKER_LINE.match(line)
        gender = GENDER_WORD.search(match[2]) if match else None
        if gender and match[1] not in genders:
            genders[match[1]] = "F" if gender[1].lower() == "female" else "M"
    return genders
