"""CaseOps: a lossless case transform applied before tokenization, and the byte sidecar that keeps BPB exact.

Why: every record since April 2026 tokenizes text whose capitals have been folded into four operator
characters (docs/data.md): "The" and "the" then share one token, and a tokenizer of the same size spends
its pieces on more words. The model is scored on the original text, so the bytes a token carries are no longer
what its piece spells: a per-token byte sidecar, written beside the validation shard, gives them.

Operators (private-use code points, one character each):
  TITLE U+E001    the next letter is upper case
  ALLCAPS U+E002  the whole next run of letters is upper case
  CAPNEXT U+E003  inside a word: the next letter is upper case
  ESC U+E004      the next character is an operator character that was in the input

Encoding works on maximal runs of ASCII letters [A-Za-z]; everything else (digits, punctuation, non-ASCII
letters such as é or Ж) is copied as it is. A run that is all lower case is copied; all upper case with two
or more letters becomes ALLCAPS + the run in lower case; a capital followed by lower case becomes TITLE +
lower case; any other run becomes TITLE if its first letter is upper case, its first letter in lower case,
then each later letter in lower case, led by CAPNEXT when it was upper case. An operator character found
in the input is written as ESC + itself. Example: "The NASA Launch of iPhone A" becomes
TITLE "the " ALLCAPS "nasa " TITLE "launch of i" CAPNEXT "phone " TITLE "a".

Decoding inverts this exactly and rejects operators placed where the encoder never puts them.

The sidecar: entry t is the number of bytes of the *original* text that token t carries: the UTF-8 bytes of
its surface (the span of the transformed input SentencePiece assigns to it), where operators count 0 and an
escaped operator character counts its own 3 bytes. BOS counts 0. SentencePiece's normalizer strips each
document's leading and trailing whitespace and attributes it to no token, so a document's entries sum to its
UTF-8 length less that whitespace (what the published sidecar does too).
"""
from __future__ import annotations

import re

import numpy as np

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)  # the tokenizer's user-defined symbols, ids 4-7, in this order
_OPERATOR_SET = frozenset(OPERATORS)
_RUN = re.compile(r"[A-Za-z]+|[\ue001-\ue004]")
# In UTF-8 every operator is EE 80 81..84; an escaped one is ESC (EE 80 84) followed by one of them.
_OPERATOR_BYTES = re.compile(rb"\xee\x80\x84\xee\x80[\x81-\x84]|\xee\x80[\x81-\x84]")


class CaseOpsError(ValueError):
    """Text that no encoding produces (an operator where the encoder never writes one)."""


def _encode_run(match: re.Match) -> str:
    word = match.group(0)
    if word in _OPERATOR_SET:
        return ESC + word
    if word.islower():
        return word
    lower = word.lower()
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + lower
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        return TITLE + lower
    parts = [TITLE if word[0].isupper() else "", lower[0]]
    parts += [CAPNEXT + low if char.isupper() else low for char, low in zip(word[1:], lower[1:])]
    return "".join(parts)


def encode(text: str) -> str:
    """The CaseOps form of `text`: no ASCII capital is left, operator characters mark where they were."""
    return _RUN.sub(_encode_run, text)


def decode(text: str) -> str:
    """The original text of an encoded one; CaseOpsError on misplaced operators or ASCII capitals."""
    out: list[str] = []
    pending = ""  # TITLE, ALLCAPS or CAPNEXT waiting for its letter
    allcaps = False  # inside a run opened by ALLCAPS
    run_length = 0  # letters of the current ASCII run written so far
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if "a" <= char <= "z":
            upper = allcaps or bool(pending)
            out.append(char.upper() if upper else char)
            pending, run_length = "", run_length + 1
        elif char in _OPERATOR_SET:
            if pending:
                raise CaseOpsError(f"position {i}: operator U+{ord(char):04X} right after another operator")
            if char == ESC:
                if i + 1 >= n or text[i + 1] not in _OPERATOR_SET:
                    raise CaseOpsError(f"position {i}: ESC not followed by an operator character")
                _end_run(allcaps, run_length, i)
                out.append(text[i + 1])
                allcaps, run_length, i = False, 0, i + 2
                continue
            if char == CAPNEXT:
                if run_length == 0 or allcaps:
                    raise CaseOpsError(f"position {i}: CAPNEXT outside a word (or inside an ALLCAPS run)")
            elif run_length:
                raise CaseOpsError(f"position {i}: {'TITLE' if char == TITLE else 'ALLCAPS'} inside a word")
            else:
                allcaps = char == ALLCAPS
            pending = char
        elif "A" <= char <= "Z":
            raise CaseOpsError(f"position {i}: ASCII capital {char!r} (encoded text has none)")
        else:
            if pending:
                raise CaseOpsError(f"position {i}: operator not followed by a letter")
            _end_run(allcaps, run_length, i)
            out.append(char)
            allcaps, run_length = False, 0
        i += 1
    if pending:
        raise CaseOpsError("text ends with an operator")
    _end_run(allcaps, run_length, n)
    return "".join(out)


def _end_run(allcaps: bool, run_length: int, position: int) -> None:
    if allcaps and run_length < 2:
        raise CaseOpsError(f"position {position}: ALLCAPS on a run of {run_length} letter(s) (needs 2 or more)")


def original_byte_weights(transformed: str) -> np.ndarray:
    """Per UTF-8 byte of `transformed`: 1, or 0 for the bytes of operators (an escaped operator's 3 bytes keep
    their 1s: they are original text). Summed over a span: the original bytes that span carries."""
    data = transformed.encode("utf-8")
    weights = np.ones(len(data), dtype=np.int64)
    for match in _OPERATOR_BYTES.finditer(data):
        weights[match.start():match.start() + 3] = 0  # the lone operator, or the ESC before an escaped one
    return weights


def _pieces_with_offsets(processor, text: str) -> list[tuple[int, int, int]]:
    """(id, begin, end) per token, begin/end the UTF-8 byte span of `text` SentencePiece assigns to it."""
    try:  # sentencepiece < 0.2.1
        proto = processor.encode(text, out_type="immutable_proto")
    except (ValueError, TypeError):  # newer releases: a protobuf message (needs the protobuf package)
        proto = processor.encode(text, return_type="proto")
    return [(piece.id, piece.begin, piece.end) for piece in proto.pieces]


def tokens_and_bytes(processor, transformed: str) -> tuple[list[int], list[int]]:
    """The document's token ids and, per token, the original UTF-8 bytes it carries (its sidecar entries)."""
    cumulative = np.concatenate([[0], np.cumsum(original_byte_weights(transformed))])
    pieces = _pieces_with_offsets(processor, transformed)
    return [p[0] for p in pieces], [int(cumulative[end] - cumulative[begin]) for _, begin, end in pieces]


# What SentencePiece's nmt_nfkc normalizer drops at a document's ends (measured over the BMP with sentencepiece
# 0.2): Python's whitespace except VT, the information separators and NEL, which it keeps, plus the zero-width
# and direction marks, U+2581 (its own space symbol), the byte-order mark and U+FFFD, which it removes.
NORMALIZER_STRIPS = "".join(
    {chr(c) for c in range(0x3001) if chr(c).isspace()} - set("\x0b\x1c\x1d\x1e\x1f\x85")
) + "\u061c\u200b\u200c\u200e\u200f\u2581\ufeff\ufffd"


def stripped_bytes(text: str) -> int:
    """The UTF-8 bytes a document's sidecar entries sum to: the text less its leading and
    trailing whitespace, which the normalizer removes and gives to no token."""
    return len(text.strip(NORMALIZER_STRIPS).encode("utf-8"))
