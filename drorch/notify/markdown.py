"""A small Markdown writer for reports (headings, paragraphs, lists, tables)."""

from __future__ import annotations

from drorch.notify.text import printable


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


class Doc:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def h(self, level: int, text: str) -> None:
        self.parts.append("#" * level + " " + text)

    def p(self, text: str) -> None:
        self.parts.append(text)

    def ul(self, items) -> None:
        items = [str(i).replace("\n", " ") for i in items]
        if items:
            self.parts.append("\n".join(f"- {item}" for item in items))

    def table(self, headers: list[str], rows: list[list]) -> None:
        if not rows:
            return
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
        self.parts.append("\n".join(lines))

    def markdown(self) -> str:
        return printable("\n\n".join(self.parts) + "\n")
