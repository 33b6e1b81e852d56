"""index.html: one self-contained page (no scripts, no external assets) that embeds every table
and figure of a report and links their files (PNG, SVG, Markdown, HTML, CSV) by relative path."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1280px; margin: 0 auto; padding: 0 24px 48px; }
h1 { font-size: 24px; margin: 24px 0 4px; } h2 { font-size: 19px; margin-top: 36px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin-top: 24px; }
nav ul { columns: 2; padding-left: 18px; } .muted { color: #666; }
.warning { color: #8a5300; background: #fff4e0; padding: 6px 10px; border-left: 4px solid #e69500; }
table.data { border-collapse: collapse; font-size: 12.5px; margin: 8px 0; }
table.data th, table.data td { padding: 3px 9px; border-bottom: 1px solid #e4e4e4; white-space: nowrap; }
table.data th { background: #f4f5f7; text-align: left; position: sticky; top: 0; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr.total td { font-weight: 600; border-top: 2px solid #999; }
table.data td.bad { color: #b00020; font-weight: 600; } table.data td.warn { color: #a66400; }
table.data caption { text-align: left; color: #666; padding: 4px 0; }
.scroll { overflow-x: auto; } figure { margin: 12px 0 20px; }
figure img { max-width: min(100%, 1000px); height: auto; border: 1px solid #eee; }
figcaption, .files { font-size: 12.5px; color: #555; } .files a { margin-right: 10px; }
ul.notes li { margin: 3px 0; } dl.meta { display: grid; grid-template-columns: max-content auto;
gap: 2px 14px; font-size: 13px; } dl.meta dt { color: #666; } dl.meta dd { margin: 0; }
"""


@dataclass
class Section:
    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)  # HTML fragments, in order

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")


def link_list(paths, out: Path) -> str:
    links = " ".join(f'<a href="{_rel(p, out)}">{p.suffix.lstrip(".").upper()}</a>' for p in paths)
    return f'<div class="files">files: {links}</div>'


def figure(paths, out: Path, caption: str) -> str:
    png = next(p for p in paths if p.suffix == ".png")
    return (f'<figure><a href="{_rel(png, out)}"><img src="{_rel(png, out)}" alt="{html.escape(caption)}">'
            f"</a><figcaption>{html.escape(caption)}</figcaption>{link_list(paths, out)}</figure>")


def table(table_html: str, paths, out: Path, heading: str = "") -> str:
    head = f"<h3>{html.escape(heading)}</h3>" if heading else ""
    return f'{head}<div class="scroll">{table_html}</div>{link_list(paths, out)}'


def paragraph(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def notes(lines) -> str:
    return '<ul class="notes">' + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def definition_list(items: dict) -> str:
    return '<dl class="meta">' + "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items.items()) + "</dl>"


def write_index(out: Path, title: str, intro: str, sections: list[Section]) -> Path:
    nav = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>", paragraph(intro, "muted"), f"<nav><ul>{nav}</ul></nav>"]
    for s in sections:
        body.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        body.extend(s.parts)
    path = out / "index.html"
    path.write_text(page(title, "\n".join(body)))
    return path


def _rel(path: Path, out: Path) -> str:
    return html.escape(Path(os.path.relpath(path, out)).as_posix())
