"""Near-duplicate detection: a small fixed-size fingerprint per message, compared in O(1).

The same request from the same customer often arrives twice, reworded, reordered or cut short,
on the same channel or another one ("Hi, my order #4711 has not arrived yet, can you check?" by
email, then "order 4711 still hasn't arrived, can you check" in chat). The later message is kept
but flagged as a near duplicate of the earlier one. This module is pure: no I/O, no state.

Method
  1. `clean_text` drops quoted history and the signature, then normalises: NFKC, lower case,
     English negative contractions spelt out ("hasn't" -> "has not"), and every character that
     is not a letter, digit or combining mark becomes a space.
  2. Shingles are the words (they tolerate reordering) and word pairs (evidence of word order)
     of the cleaned text. Scripts written without spaces (Chinese, Japanese, Thai, Lao, Khmer,
     Myanmar) would give one "word" per phrase, so their runs are cut into overlapping character
     bigrams, which then act as words. Character 4-grams of long words were tried for partial
     credit on inflections ("arrived"/"arrive"): on a generated corpus like the one in the
     tests they made 75 of 107,123 unrelated pairs reach the threshold instead of 4 (shared
     suffixes such as "tion", common long words), so they are not used.
  3. Each shingle is hashed to 32 bits, stable across processes (unlike `hash()`); the lowest
     bit says whether it is a word or a word pair. The fingerprint keeps the K = 64 smallest
     distinct hashes (a "bottom-k" sketch) and the number of distinct shingles.
  4. `similarity` estimates the Jaccard index and the containment of the smaller text in the
     larger (truncation) from the two sketches; both are exact when each text has at most K
     shingles (about 32 words).
  5. `band_keys` gives a few index keys per fingerprint: an earlier message is a candidate
     when it shares a key, so the store looks candidates up instead of scanning.

DEFAULT_THRESHOLD = 0.6, from the tests: the order example above scores 0.76, a copy cut to
its first 60% of words or with its sentences reordered 0.97 to 1.0, unrelated requests below
0.2, and 2 of 67,811 unrelated pairs of the generated corpus reach it. Two requests sharing a
template ("Hello, I have a question about my order." and different questions) score 0.54,
just under it; with a shared greeting and sign-off and a short differing part they can cross
it, which is the price of catching rewordings. Japanese and Thai, compared by character
bigrams, score rewordings lower (0.6 to 0.8) and unrelated texts higher (up to 0.3: shared
particles) than spaced scripts do.

Hash: crc32 followed by a multiply-xorshift finaliser. crc32 alone is linear and its outputs
on sequential tokens ("order 1", "order 2", ...) are far more regular than random (chi-square
per degree of freedom 0.07 on 256 buckets, where random gives about 1), so its smallest values
are no random sample; with the finaliser it is 0.95, and the error of the Jaccard estimate is
what theory predicts for random hashing. It costs 0.2 us a shingle, blake2b(digest_size=4) 0.6 us.

Cost per message (2-core EPYC VM, Python 3.11; printed by test_print_costs, best of 5): a
fingerprint of a 300-word text about 300 us with nothing remembered (linear in the length of
the text; the hashes of words and word pairs seen before are remembered, which takes a
50-word support message from about 40 to 25 us for its shingles), one
similarity of two full fingerprints about 11 us, band keys about 2 us. With a bounded number
of candidates per message that is O(1). Memory per message: `to_bytes` is 5 + 4 * min(K,
shingles) bytes, at most 261; a full `Fingerprint` object is about 2.4 kB in memory.
"""

from __future__ import annotations

import re
import struct
import unicodedata
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from typing import cast

from gateway.quoting import split_reply

K = 64  # hashes kept per fingerprint
MIN_WORDS = 3  # fewer words than this: no fingerprint, never a near duplicate
DEFAULT_THRESHOLD = 0.6  # similarity at or above which a message is flagged as a near duplicate
CONTAINED_MIN_SHINGLES = 16  # containment counts fully only for a smaller text this big
BANDS = 6  # index keys per fingerprint

_VERSION = 1
_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # odd, about 2**32 / golden ratio

# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3005\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
)
_TOKEN = re.compile(f"([{_UNSPACED}]+)|[^\\s{_UNSPACED}]+")
_CACHE_LIMIT = 1 << 16
# English negative contractions, the commonest rewording: "hasn't" and "has not" must match.
_NOT_IRREGULAR = (
    ("can't", "can not"),
    ("can\u2019t", "can not"),
    ("cannot", "can not"),
    ("won't", "will not"),
    ("won\u2019t", "will not"),
)
_NOT = re.compile("n['\u2019]t\\b")  # "\u2019" is the typographic apostrophe
_HAS_UNSPACED = re.compile(f"[{_UNSPACED}]")


class _CharMap(dict[int, str]):
    """str.translate table: lower case for letters, digits and marks, a space for the rest."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        kept = char.isalnum() or unicodedata.category(char).startswith("M")
        out = char.lower() if kept else " "
        if len(self) < _CACHE_LIMIT:
            self[code] = out
        return out


_CHARS = _CharMap()


def clean_text(text: str, *, own_only: bool = False) -> str:
    """The words of a message's own text: lower case, separated by single spaces.

    Dropped: lines starting with '>' (quoted); everything from an attribution line on ("On ...
    wrote:", "Am ... schrieb ...:", "Le ... a écrit :", also wrapped onto two lines, and
    "-----Original Message-----" in English, German or French); everything from an Outlook
    header block on ("From:" followed within 4 lines by "Sent:"/"Date:"/"Gesendet:"/"Envoyé :");
    everything after a signature delimiter line ("-- " or "--"). The rest is NFKC-normalised
    and lower-cased; every character that is not a letter, a digit or a combining mark (needed
    by Thai and Indic scripts) becomes a space; runs of whitespace collapse into one space.
    """
    kept = unicodedata.normalize("NFKC", text)
    if not own_only:  # the caller may have cut quotes and signature already
        kept = split_reply(kept)[0]
    kept = kept.lower()
    for short, full in _NOT_IRREGULAR:
        kept = kept.replace(short, full)
    kept = _NOT.sub(" not", kept)
    return " ".join(kept.translate(_CHARS).split())


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The `K` smallest distinct 32-bit shingle hashes, ascending, and the number of shingles.

    When `count <= K` the sketch holds every shingle and comparisons are exact.
    """

    hashes: tuple[int, ...]
    count: int

    def __post_init__(self) -> None:
        n = len(self.hashes)
        if not 0 < n <= K or self.count < n or (self.count > n and n != K):
            raise ValueError(f"inconsistent fingerprint: {n} hashes for {self.count} shingles")

    def to_bytes(self) -> bytes:
        """Version byte, uint32 shingle count, then the hashes as uint32, little endian."""
        return struct.pack(f"<BI{len(self.hashes)}I", _VERSION, self.count, *self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        n, rest = divmod(len(data) - 5, 4)
        if rest or n <= 0 or data[0] != _VERSION:
            raise ValueError("not a fingerprint")
        _, count, *hashes = struct.unpack(f"<BI{n}I", data)
        if any(a >= b for a, b in pairwise(hashes)):
            raise ValueError("fingerprint hashes are not ascending")
        return cls(tuple(hashes), count)


def _words(cleaned: str) -> tuple[list[str], int]:
    """Tokens (unspaced-script runs as character bigrams) and the number of words they make."""
    if cleaned.isascii() or not _HAS_UNSPACED.search(cleaned):
        tokens = cleaned.split()
        return tokens, len(tokens)
    tokens = []
    words = 0
    for match in _TOKEN.finditer(cleaned):
        run = match.group(1)
        if run is None:
            tokens.append(match.group())
            words += 1
        else:  # about two characters per word in these scripts
            tokens.extend([run[i : i + 2] for i in range(len(run) - 1)] or [run])
            words += len(run) // 2
    return tokens, words


def _finalised(crc: int) -> int:
    h = (crc * _GOLDEN) & _MASK
    return h ^ (h >> 16)


# Shingle hashes already computed: support texts repeat their words and word pairs, and the
# arithmetic above is on 64-bit Python ints (slow). Cleared when full, so memory stays bounded
# (about 1 MB and 2.5 MB).
_WORD_HASHES: dict[str, tuple[int, int]] = {}  # word -> (its crc32, its shingle hash)
_PAIR_HASHES: dict[tuple[str, str], int] = {}
_WORDS_CACHED = 1 << 13
_PAIRS_CACHED = 1 << 14


def _word_hash(word: str) -> tuple[int, int]:
    crc = zlib.crc32(word.encode())
    if len(_WORD_HASHES) >= _WORDS_CACHED:
        _WORD_HASHES.clear()
    found = _WORD_HASHES[word] = (crc, _finalised(crc) & ~1)
    return found


def _pair_hash(pair: tuple[str, str], first_crc: int) -> int:
    found = _finalised(zlib.crc32(b" " + pair[1].encode(), first_crc)) | 1
    if len(_PAIR_HASHES) >= _PAIRS_CACHED:
        _PAIR_HASHES.clear()
    _PAIR_HASHES[pair] = found
    return found


def _shingle_hashes(tokens: list[str]) -> set[int]:
    """Hashes of the words (lowest bit 0) and of the word pairs "a b" (lowest bit 1).

    crc32 of a word pair continues the crc32 of its first word, and a multiply-xorshift
    finaliser makes the linear crc32 behave like a random hash (see the module docstring).
    """
    word_hashes = _WORD_HASHES
    words = [word_hashes.get(t) or _word_hash(t) for t in tokens]
    hashes = {h for _, h in words}
    pairs = [_PAIR_HASHES.get(pair) for pair in pairwise(tokens)]
    if None in pairs:  # a few new pairs: ids, names
        missing = pairs.index(None)
        while True:
            pair = (tokens[missing], tokens[missing + 1])
            pairs[missing] = _pair_hash(pair, words[missing][0])
            try:
                missing = pairs.index(None, missing + 1)
            except ValueError:
                break
    hashes.update(cast(list[int], pairs))  # no None left
    return hashes


def fingerprint(text: str, *, own_only: bool = False) -> Fingerprint | None:
    """The fingerprint of a message, or None when its own text has fewer than 3 words.

    Such a message ("hi", "thanks!", "ok great", "ありがとう") is too short to judge and is
    never a near duplicate of anything. Unspaced scripts count about one word per two
    characters.
    """
    tokens, words = _words(clean_text(text, own_only=own_only))
    if words < MIN_WORDS:
        return None
    hashes = _shingle_hashes(tokens)
    return Fingerprint(tuple(sorted(hashes)[:K]), len(hashes))


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Similarity in [0, 1]: max(Jaccard, containment * size penalty), estimated from sketches.

    Jaccard (shared shingles / all shingles of both) uses the bottom-k estimator: among the
    K smallest hashes of the union of both sketches, which are the K smallest of all
    shingles, the fraction found in both. Containment (shared / shingles of the smaller
    text) handles truncation: the smaller text's sketch hashes up to the larger one's
    largest sketch hash are a random sample of the smaller text, and for them membership in
    the larger text is known exactly; when there are none, only Jaccard counts. Containment
    is scaled by min(1, shingles of the smaller / 16): a text needs about 8 words for its
    containment to count fully, and at least 6 words wholly contained in another text to
    reach the default threshold, so "can you check my order" inside a long email is not a
    near duplicate.
    Both estimates are exact when each text has at most K shingles.
    """
    sa, sb = set(a.hashes), set(b.hashes)
    both = sorted(sa & sb)
    if a.count <= K and b.count <= K:
        jaccard = len(both) / len(sa | sb)
    else:  # the fraction of the K smallest of the union that is in both
        union = sorted(sa | sb)[:K]
        jaccard = bisect_right(both, union[-1]) / len(union)
    small, large = (a, b) if (a.count, a.hashes) <= (b.count, b.hashes) else (b, a)
    limit = large.hashes[-1] if large.count > K else _MASK
    sample = bisect_right(small.hashes, limit)
    if not sample:  # the larger text is so much larger that the sketches cannot tell
        return jaccard
    contained = bisect_right(both, limit) / sample
    return max(jaccard, contained * min(1.0, small.count / CONTAINED_MIN_SHINGLES))


def band_keys(fp: Fingerprint, bands: int = BANDS) -> list[int]:
    """Index keys for candidate lookup: the `bands` smallest word-pair hashes of the sketch.

    The store indexes each message under its keys; an earlier message sharing a key with a
    new one is a candidate, to be confirmed with `similarity`. Texts that share many word
    pairs almost surely share one of their few smallest; texts sharing one common pair
    ("my account", "thank you", a greeting) do so only when its hash happens to be among
    both texts' smallest. Word pairs, not single words: single words ("my", "the") made 80%
    of unrelated pairs candidates. More keys raise the recall for a short text inside a
    long one and raise false candidates, each of which costs one `similarity` call. Measured
    by the tests on a generated corpus built from 40 support sentences, greetings and
    sign-offs (pairs reaching DEFAULT_THRESHOLD that share a key / unrelated pairs that do):
    6 keys 0.986 / 0.085 (the default); 4 keys 0.973 / 0.058; 8 keys 0.991 / 0.115; the 6
    smallest hashes of words and pairs alike 0.997 / 0.734.
    """
    pairs = [h for h in fp.hashes if h & 1][:bands]
    return pairs or list(fp.hashes[:bands])
