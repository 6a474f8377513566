"""Script and width normalisation: what we index and match on, never what we show.

Everything here is length-preserving in practice (OpenCC's t2s and s2t map character to character for
the text we see), so offsets computed on normalised text can usually be mapped back to display text;
callers that rely on that check the lengths.
"""

from __future__ import annotations

import functools
import re

import opencc

# Full-width ASCII (！ to ～) and the ideographic space, folded to their half-width forms.
_WIDTH_TABLE = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_WIDTH_TABLE[0x3000] = 0x20


@functools.cache
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional → Simplified Chinese (OpenCC ``t2s``)."""
    return _converter("t2s").convert(text)


def to_traditional(text: str) -> str:
    """Simplified → Traditional Chinese (OpenCC ``s2t``)."""
    return _converter("s2t").convert(text)


def fold_width(text: str) -> str:
    """Full-width Latin letters, digits and ASCII punctuation → half-width."""
    return text.translate(_WIDTH_TABLE)


def normalize(text: str) -> str:
    """The matching form of ``text``: half-width, Simplified, lower-case Latin."""
    return to_simplified(fold_width(text)).lower()


_HAN = re.compile(r"[\u4e00-\u9fff]")


def is_traditional(text: str) -> bool:
    """True when ``text`` is written in Traditional script (more Han characters change under t2s than s2t)."""
    han = "".join(_HAN.findall(text))
    if not han:
        return False
    changed_by_t2s = sum(a != b for a, b in zip(han, to_simplified(han)))
    changed_by_s2t = sum(a != b for a, b in zip(han, to_traditional(han)))
    return changed_by_t2s > changed_by_s2t


def match_script(text: str, like: str) -> str:
    """Convert ``text`` into the script ``like`` is written in."""
    return to_traditional(text) if is_traditional(like) else to_simplified(text)


# Lone surrogates (invalid UTF-8 bytes decoded with surrogateescape, JSON "\ud800" escapes) cannot be encoded,
# stored or shown; NUL and the other C0 controls but tab and line breaks have no place in text either.
_UNUSABLE = re.compile(r"[\ud800-\udfff]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text_field(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD and control characters (but tab and line breaks) removed."""
    return _UNUSABLE.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else "", text)


def has_unusable(text: str) -> bool:
    """Whether :func:`clean_text_field` would change ``text``."""
    return _UNUSABLE.search(text) is not None
