"""A report as a list of blocks, rendered to Markdown (images beside it) and to one HTML file
(images embedded), so the same content reads in a repository viewer, a browser and the MLflow UI.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Text:
    """A paragraph; `code` and **bold** are the only markup."""

    text: str
    kind: str = ""  # "" or "note" (a highlighted remark) or "warning"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """One or more images side by side, each a path relative to the report directory."""

    files: list[str]
    caption: str = ""


@dataclass(frozen=True)
class Details:
    """Collapsed preformatted text (e.g. a failed trial's traceback)."""

    summary: str
    text: str


@dataclass(frozen=True)
class Row:
    """Blocks side by side in HTML (e.g. a table beside its figure); one after another in Markdown."""

    blocks: list


Block = Heading | Text | Table | Figure | Details | Row


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def images(self) -> list[str]:
        """Every image file the document shows, relative to its directory."""
        return [f for block in _flatten(self.blocks) if isinstance(block, Figure) for f in block.files]


def _flatten(blocks: list) -> list:
    return [inner for block in blocks for inner in (_flatten(block.blocks) if isinstance(block, Row) else [block])]


NUMERIC = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?( ± [\d.]+)?%?$|^–$")
STATUS_CLASSES = {
    "FAILED": "failed",
    "RUNNING": "running",
    "KILLED": "failed",
    "SCHEDULED": "running",
    "FINISHED": "finished",
}


def to_markdown(document: Document) -> str:
    return "\n".join([f"# {document.title}", "", *_markdown_lines(document.blocks)])


def _markdown_lines(blocks: list) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Row):
            lines += _markdown_lines(block.blocks)
        elif isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Text):
            prefix = {"note": "> ", "warning": "> **Warning:** "}.get(block.kind, "")
            lines += [prefix + block.text, ""]
        elif isinstance(block, Table):
            numeric = _numeric_columns(block)
            lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines += ["", f"*{block.caption}*"] if block.caption else []  # a blank line ends a GFM table
            lines.append("")
        elif isinstance(block, Figure):
            lines += [" ".join(f"![{Path(f).stem}]({f})" for f in block.files)]
            lines += [f"*{block.caption}*"] if block.caption else []
            lines.append("")
        elif isinstance(block, Details):
            lines += [
                f"<details><summary>{html.escape(block.summary)}</summary>",
                "",
                "```",
                block.text.rstrip(),
                "```",
                "",
                "</details>",
                "",
            ]
    return lines


def to_html(document: Document, base_dir: Path) -> str:
    """One self-contained page: every image is embedded as a data URI."""
    body = [f"<h1>{_inline(document.title)}</h1>", *_html_blocks(document.blocks, base_dir)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(document.title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _html_blocks(blocks: list, base_dir: Path) -> list[str]:
    body = []
    for block in blocks:
        if isinstance(block, Row):
            cells = "".join(f"<div>{''.join(_html_blocks([b], base_dir))}</div>" for b in block.blocks)
            body.append(f'<div class="row">{cells}</div>')
        elif isinstance(block, Heading):
            level = min(block.level, 6)
            anchor = re.sub(r"[^a-z0-9]+", "-", block.text.lower()).strip("-")
            body.append(f'<h{level} id="{anchor}">{_inline(block.text)}</h{level}>')
        elif isinstance(block, Text):
            css = f' class="{block.kind}"' if block.kind else ""
            body.append(f"<p{css}>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Figure):
            images = "".join(
                f'<img src="{_data_uri(base_dir / f)}" alt="{html.escape(Path(f).stem)}">' for f in block.files
            )
            caption = f"<figcaption>{_inline(block.caption)}</figcaption>" if block.caption else ""
            body.append(f'<figure><div class="images">{images}</div>{caption}</figure>')
        elif isinstance(block, Details):
            body.append(
                f"<details><summary>{_inline(block.summary)}</summary>"
                f"<pre>{html.escape(block.text.rstrip())}</pre></details>"
            )
    return body


def _html_table(table: Table) -> str:
    numeric = _numeric_columns(table)
    head = "".join(f'<th class="{"num" if n else ""}">{_inline(h)}</th>' for h, n in zip(table.header, numeric))
    rows = []
    for row in table.rows:
        cells = []
        for cell, is_numeric in zip(row, numeric):
            css = [c for c in ("num" if is_numeric else "", STATUS_CLASSES.get(cell, "")) if c]
            cells.append(f'<td class="{" ".join(css)}">{_inline(cell)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{_inline(table.caption)}</caption>" if table.caption else ""
    return (
        f'<div class="table-wrap"><table>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _numeric_columns(table: Table) -> list[bool]:
    columns = []
    for i in range(len(table.header)):
        values = [row[i] for row in table.rows if i < len(row) and row[i] not in ("", "–")]
        columns.append(bool(values) and all(NUMERIC.match(v) for v in values))
    return columns


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", escaped)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1180px; margin: 24px auto;
       padding: 0 16px; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: 6px; }
h2 { font-size: 1.35em; margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: 4px; }
h3 { font-size: 1.15em; margin-top: 1.4em; }
h4 { font-size: 1em; margin-bottom: 0.4em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
caption { caption-side: bottom; text-align: left; font-style: italic; color: #555; padding-top: 4px; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.failed { color: #b00020; font-weight: 600; }
td.running { color: #b06000; font-weight: 600; }
td.finished { color: #1b5e20; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; font-size: 0.92em; }
p.note { background: #eef5ff; border-left: 4px solid #4a7bd0; padding: 6px 10px; }
p.warning { background: #fff4e5; border-left: 4px solid #e08a00; padding: 6px 10px; }
.table-wrap { overflow-x: auto; max-width: 100%; }
td { max-width: 360px; overflow-wrap: break-word; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row > div { flex: 0 1 auto; min-width: 0; }
figure { margin: 8px 0 18px; }
figure .images { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; color: #555; font-size: 0.9em; }
details { margin: 4px 0 10px; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 0.8em; max-height: 320px; }
"""
