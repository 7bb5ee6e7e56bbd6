"""A tiny document model (headings, paragraphs, lists, tables, code) written
out as Markdown or as one self-contained HTML page: render.py and report.py
build blocks once and print either."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str, anchor: str | None = None) -> None:
        self.blocks.append(("h", level, text, anchor))

    def p(self, text: str) -> None:
        if text.strip():
            self.blocks.append(("p", text.strip()))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", headers, [["" if v is None else str(v) for v in row] for row in rows]))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", lang, text.rstrip("\n")))

    # -- output ----------------------------------------------------------------------

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join("- " + item.replace("\n", "\n  ") for item in block[1]))
            elif kind == "table":
                headers, rows = block[1], block[2]
                lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "code":
                fence = "~~~~" if "```" in block[2] else "```"
                out.append(f"{fence}{block[1]}\n{block[2]}\n{fence}")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        body = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                anchor = f' id="{html.escape(block[3])}"' if block[3] else ""
                body.append(f"<h{block[1]}{anchor}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                for para in re.split(r"\n\s*\n", block[1]):
                    body.append(f"<p>{_inline(para).replace(chr(10), '<br>')}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i).replace(chr(10), '<br>')}</li>" for i in block[1])
                            + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{_inline(v)}</td>" for v in row) + "</tr>" for row in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(block[2])}</code></pre>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title>\n<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
          "pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}code{font-family:ui-monospace,monospace}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
          "h3{border-top:1px solid #ddd;padding-top:.8rem}")


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", "<br>")


def _inline(text: str) -> str:
    """Escape, then `code`, **bold** and *emphasis*."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<em>\1</em>", escaped)
