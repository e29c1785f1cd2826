"""Token accounting: a cheap, deterministic stand-in for a real tokenizer."""

from __future__ import annotations

import re

# A stream token is a word plus the whitespace after it, so joining the tokens
# gives back the exact text (leading whitespace becomes a token of its own).
_TOKEN = re.compile(r"\S+\s*|\s+")


def split_tokens(text: str) -> list[str]:
    """Split a reply into the pieces it is streamed in."""
    return _TOKEN.findall(text)


def tokens_for_chars(chars: int) -> int:
    """Estimate tokens for a prompt of `chars` characters: ceil(chars / 4)."""
    return -(-chars // 4)


def estimate_tokens(text: str) -> int:
    """Estimate the tokens of one piece of text: ceil(len / 4)."""
    return tokens_for_chars(len(text))
