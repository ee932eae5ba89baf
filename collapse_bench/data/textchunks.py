"""Raw-text chunking of the mirror's text datasets (tinyshakespeare, wikitext2): blocks merged or split into
200-2000 character chunks (target 600), the first 2000 chunks per split. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

Row = dict[str, Any]
MIN_CHARS, TARGET_CHARS, MAX_CHARS = 200, 600, 2000  # raw-text chunk bounds (mirror rule)
MAX_CHUNKS = 2000  # "first 2000 chunks per split"


def split_long(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Split a block longer than ``limit`` into greedy runs of whole sentences (slices of the original)."""
    spans, start = [], 0
    for gap in re.finditer(r"(?<=[.!?])\s+", text):
        spans.append((start, gap.start()))
        start = gap.end()
    spans.append((start, len(text)))
    pieces: list[str] = []
    first, last = spans[0]
    for a, b in spans[1:]:
        if b - first <= limit:
            last = b
        else:
            pieces.append(text[first:last])
            first, last = a, b
    pieces.append(text[first:last])
    out = []
    for piece in pieces:  # a single sentence over the limit: cut at the last space before it
        while len(piece) > limit:
            cut = piece.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            out.append(piece[:cut].rstrip())
            piece = piece[cut:].lstrip()
        out.append(piece)
    return out


def chunk_blocks(blocks: Iterable[str], joiner: str = "\n\n") -> list[str]:
    """Merge consecutive blocks into chunks: close a chunk once it reaches 600 chars or when the next
    block would push it past 2000; blocks over 2000 are split by sentences and stand alone; chunks
    under 200 chars are dropped."""
    out: list[str] = []
    cur: list[str] = []

    def flush() -> None:
        text = joiner.join(cur)
        if len(text) >= MIN_CHARS:
            out.append(text)
        cur.clear()

    for block in blocks:
        if len(block) > MAX_CHARS:
            flush()
            out.extend(p for p in split_long(block) if len(p) >= MIN_CHARS)
            continue
        if cur and len(joiner.join(cur)) + len(joiner) + len(block) > MAX_CHARS:
            flush()
        cur.append(block)
        if len(joiner.join(cur)) >= TARGET_CHARS:
            flush()
    flush()
    return out


def build_tinyshakespeare(text: str) -> dict[str, list[Row]]:
    """The whole input.txt -> {'train', 'test'}: cut at the last blank line before 90% of the characters,
    speeches (blank-line separated) merged into 200-2000 char chunks, first 2000 chunks per split."""
    cut = text.rfind("\n\n", 0, int(len(text) * 0.9))
    cut = cut if cut > 0 else int(len(text) * 0.9)
    out = {}
    for split, part in (("train", text[:cut]), ("test", text[cut:])):
        speeches = [b.strip() for b in re.split(r"\n[ \t]*\n", part) if b.strip()]
        out[split] = [
            {"id": f"tinyshakespeare-{split}-{i}", "text": chunk, "domain": "fiction/shakespeare"}
            for i, chunk in enumerate(chunk_blocks(speeches)[:MAX_CHUNKS])
        ]
    return out


def detokenize_wikitext(line: str) -> str:
    """Light detokenisation: ' @-@ ' -> '-', ' @,@ ' -> ',', ' @.@ ' -> '.', no space before , . ; : ! ? ) ] '
    nor after ( [. Quotes, '%' and '<unk>' stay as they are."""
    line = line.strip().replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    line = re.sub(r" ([,.;:!?)\]'])", r"\1", line)
    return re.sub(r"([(\[]) ", r"\1", line)


def is_wikitext_heading(line: str) -> bool:
    s = line.strip()
    return s.startswith("= ") and s.endswith(" =")


def build_wikitext2(lines: Iterable[str], split: str) -> list[Row]:
    """Salesforce/wikitext wikitext-2-v1 rows (one line each) -> paragraphs without headings,
    detokenised, merged/split into 200-2000 char chunks; first 2000 chunks."""
    paragraphs = [detokenize_wikitext(s) for s in lines if s.strip() and not is_wikitext_heading(s)]
    return [
        {"id": f"wikitext2-{split}-{i}", "text": chunk, "domain": "encyclopedic/wikipedia"}
        for i, chunk in enumerate(chunk_blocks(paragraphs)[:MAX_CHUNKS])
    ]
