"""Render the report's blocks as Markdown or as one self-contained HTML page (inline CSS, images as
base64 data URIs, nothing fetched from anywhere). Pure text."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Block:
    kind: str  # h1 h2 h3 p note ul table code img
    text: str = ""
    items: list[str] = field(default_factory=list)  # ul items, or table headers
    rows: list[list[str]] = field(default_factory=list)  # table rows
    caption: str = ""  # code: the file name; img: the file name
    data: bytes = b""  # img: PNG bytes
    css: str = ""  # HTML only: a class for the element ("decision" for the first screen's table)


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "note":
            out.append("> **Note.** " + b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            lines = ["| " + " | ".join(_md_cell(h) for h in b.items) + " |", "|" + "---|" * len(b.items)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif b.kind == "code":
            fence = "~~~~" if "```" in b.text else "```"
            label = "sh" if b.caption == "shell" else ""
            caption = f"`{b.caption}`:\n\n" if b.caption and b.caption != "shell" else ""
            out.append(f"{caption}{fence}{label}\n{b.text.rstrip()}\n{fence}")
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.caption})")
    return "\n\n".join(out) + "\n"


# Characters Markdown (CommonMark, GitHub tables) would read as markup, and so escapes with a backslash.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def escape_md(text: object) -> str:
    """Literal text (a server's message, a tag, a host name) for report.md: every character Markdown or
    HTML could read as markup is backslash-escaped, newlines become spaces. _inline undoes it for HTML."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def code_md(text: object) -> str:
    """Literal text as an inline code span (backticks inside become quotes: a span cannot hold them)."""
    return "`" + " ".join(str(text).split()).replace("`", "'") + "`"


def _md_cell(text: str) -> str:
    return escape_md(text)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;max-width:1220px;margin:1.2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.3em;margin-top:1.8em;
border-bottom:1px solid #eee;padding-bottom:.2em}h3{font-size:1.08em;margin-top:1.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:.25em .55em;
text-align:left;vertical-align:top}th{background:#f5f5f5}tr:nth-child(even) td{background:#fafafa}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px;font-size:.92em}
pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:4px;padding:.7em;overflow-x:auto;font-size:.86em}
pre code{background:none;padding:0}.caption{font-size:.82em;color:#666;margin-bottom:-.4em}
.note{background:#fcf8e3;border:1px solid #faebcc;border-radius:4px;padding:.6em .8em}
img{max-width:100%;height:auto;border:1px solid #eee}
table.decision{font-size:.8em;margin-top:.3em}table.decision td:nth-child(n+3):nth-child(-n+7){white-space:nowrap}
table.decision tr:first-child td{background:#eef3f8}p.first-plot{margin:.4em 0}p.first-plot img{max-height:500px}
"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained page: inline CSS, images as data URIs, no external references."""
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "note":
            body.append(f'<p class="note"><strong>Note.</strong> {_inline(b.text)}</p>')
        elif b.kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.items)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b.rows
            )
            klass = f' class="{html.escape(b.css)}"' if b.css else ""
            body.append(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "code":
            caption = (
                f'<div class="caption">{html.escape(b.caption)}</div>'
                if b.caption and b.caption != "shell"
                else ""
            )
            body.append(f"{caption}<pre><code>{html.escape(b.text.rstrip())}</code></pre>")
        elif b.kind == "img":
            encoded = base64.b64encode(b.data).decode("ascii")
            klass = f' class="{html.escape(b.css)}"' if b.css else ""
            body.append(
                f'<p{klass}><img alt="{html.escape(b.text)}" src="data:image/png;base64,{encoded}"></p>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


_INLINE = re.compile(r"\\(.)|`([^`]+)`|\*\*((?:\\.|[^*])+)\*\*")


def _inline(text: str) -> str:
    """The few Markdown constructs the report writes, as HTML: backslash escapes, `code`, **bold**;
    everything else is escaped text."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(html.escape(m.group(1)))
        elif m.group(2) is not None:
            out.append(f"<code>{html.escape(m.group(2))}</code>")
        else:
            out.append(f"<strong>{_inline(m.group(3))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)
