"""Just enough of a SQL lexer to rewrite the project's own migration statements.

Pure and small: tokens with their positions and parenthesis depth, lookups by
keyword at a depth, and edits applied to the original text (so a rendered
statement keeps the migration's layout and comments). It does not validate SQL;
the ClickHouse parser does that (``tests/storage/test_cluster.py`` runs every rendered
statement through it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""(?P<space>\s+|--[^\n]*|/\*.*?\*/)
      |(?P<string>'(?:[^'\\]|\\.|'')*')
      |(?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
      |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<number>[0-9][0-9A-Za-z_.]*)
      |(?P<punct>.)""",
    re.S | re.X,
)


@dataclass(frozen=True)
class Token:
    kind: str  # string, quoted, word, number or punct
    text: str
    start: int
    end: int
    depth: int  # parentheses open before this token

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


class Statement:
    """One SQL statement as significant tokens (whitespace and comments dropped)."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.tokens: list[Token] = []
        depth = 0
        for m in _TOKEN.finditer(sql):
            kind = m.lastgroup or "punct"
            if kind == "space":
                continue
            text = m.group()
            if text == ")":
                depth -= 1
            self.tokens.append(Token(kind, text, m.start(), m.end(), depth))
            if text == "(":
                depth += 1
        self.balanced = depth == 0 and all(t.depth >= 0 for t in self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def word(self, i: int) -> str:
        """The keyword at ``i`` in upper case ('' past the end or for a non-word)."""
        return self.tokens[i].upper if 0 <= i < len(self.tokens) else ""

    def text(self, i: int) -> str:
        return self.tokens[i].text if 0 <= i < len(self.tokens) else ""

    def at(self, i: int, *words: str) -> bool:
        return all(self.word(i + k) == w for k, w in enumerate(words))

    def find(self, *words: str, start: int = 0, depth: int = 0) -> int | None:
        """Index of the first run of ``words`` at ``depth`` from ``start``."""
        for i in range(start, len(self.tokens)):
            if self.tokens[i].depth == depth and self.at(i, *words):
                return i
        return None

    def closing(self, i: int) -> int:
        """Index of the ``)`` that closes the ``(`` at ``i``."""
        depth = self.tokens[i].depth
        for j in range(i + 1, len(self.tokens)):
            if self.tokens[j].text == ")" and self.tokens[j].depth == depth:
                return j
        raise ValueError("unbalanced parentheses")

    def split(self, start: int, end: int) -> list[tuple[int, int]]:
        """Token ranges [a, b) of the comma-separated items between ``start`` and ``end`` at one depth."""
        if start >= end:
            return []
        depth = self.tokens[start].depth
        items, a = [], start
        for i in range(start, end):
            if self.tokens[i].text == "," and self.tokens[i].depth == depth:
                items.append((a, i))
                a = i + 1
        items.append((a, end))
        return items

    def source(self, a: int, b: int) -> str:
        """The original text of tokens [a, b)."""
        return self.sql[self.tokens[a].start : self.tokens[b - 1].end] if a < b else ""

    def words(self, a: int, b: int) -> set[str]:
        return {t.text for t in self.tokens[a:b] if t.kind == "word"}

    def plain_name(self, i: int) -> bool:
        """A bare table name: a word not qualified by a database (``db.t``)."""
        if not (0 <= i < len(self.tokens) and self.tokens[i].kind == "word"):
            return False
        return "." not in (self.text(i - 1), self.text(i + 1))

    def edit(self, edits: Iterable[tuple[int, int, str]]) -> str:
        """The statement with each (start, end, replacement) character span replaced."""
        out, pos = [], 0
        for start, end, new in sorted(edits):
            out.append(self.sql[pos:start])
            out.append(new)
            pos = end
        out.append(self.sql[pos:])
        return "".join(out)


def head(sql: str, limit: int = 70) -> str:
    """The start of a statement on one line, for error messages."""
    flat = " ".join(line.split("--", 1)[0] for line in sql.splitlines())
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
