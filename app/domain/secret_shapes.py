"""Credentials of unknown format: is this run of characters shaped like a key?

A table of named formats (``app.domain.redaction``) always trails the formats that exist.
What keys share is their shape: a long string drawn at random from a key alphabet (base64,
base62, hex), often behind a short vendor prefix (``xxx_``, ``xx-``, ``SG.``). What an
analyst reads is made of words, numbers and hashes: paths, rule and tool names,
identifiers, versions, UUIDs, digests. This module tells the two apart on one run of key
characters (letters, digits and ``_ - + / . = ~``) at a time, with no list of formats.

A run is cut into parts at ``.``, ``/`` and ``=`` (where a path, a domain, a dotted name or
``NAME=value`` splits, and the dots of ``SG.x.y``), and a part into pieces at ``_ - + ~``.

* A part of words, numbers and short names stays: ``node_modules``,
  ``billing-prod-481923``, ``Draft202012Validator``, ``payments-7c9f8d6b5-xk2lp``.
* A part of hex stays: MD5 to SHA-512 digests, UUIDs, git commits, container ids. With a
  short word glued to 24 hex digits or more it is a vendor token (``shpat_<hex>``,
  ``dapi<hex>``, ``<hex>-us12``), unless the word names a digest (``sha256-``, ``0x``).
* Neighbouring parts that are neither are judged together, with the hex parts between
  them (``<base64>/<base64>``, the three parts of a Discord token): their letters and
  digits, 20 or more, are a key when they look random (``looks_random``).
* A run of exactly 40 characters of base64 with a ``/`` or a ``+``, both cases and digits
  is an AWS secret access key, random-looking or not.

The parts of a run that are not a key stay, so ``SG.[redacted:generic_secret]`` and
``https://paste.example/[redacted:generic_secret]`` still name the vendor and the host.

CPU: ``redact`` runs one compiled regex for runs of 20 such characters or more; most text
has few, and the judgement of each is a handful of string operations.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections import Counter
from enum import Enum

__all__ = ["KEY_RUN", "MIN_KEY_CHARS", "key_spans", "looks_random"]

MIN_KEY_CHARS = 20
"""Letters and digits a key of unknown format has at least (vendor keys: 20 to 200)."""

KEY_RUN = re.compile(rf"(?<![A-Za-z0-9_+/.~=-])[A-Za-z0-9_+/.~=-]{{{MIN_KEY_CHARS},}}")
"""A run of key characters long enough to hold a key; it starts where such a run starts,
so a long run is scanned once."""

_PART = re.compile(r"[^./=]+")
# Letters of one case and separators, no digit: words (``exfiltration.curl_upload``).
_ONE_CASE_WORDS = re.compile(r"[a-z_+/.~=-]+|[A-Z_+/.~=-]+")
# An AWS secret access key: exactly 40 characters of base64, with no prefix. Its own shape
# is enough when it holds a ``/`` or a ``+`` and all three classes of character, and does
# not start like an absolute path: no word, hash or name has it (none of the 25,649 file
# paths of the installed packages does), and a key of it need not look random (AWS's own
# documented example ends in ``EXAMPLEKEY``).
_AWS_SECRET_SHAPE = re.compile(r"[A-Za-z0-9+][A-Za-z0-9/+]{39}")
# Runs this long or shorter are judged once (names and paths repeat from event to event).
_CACHED_RUN = 256
_PIECE_SEPARATORS = re.compile(r"[-_+~]+")
_CHUNK = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_VOWELS = frozenset("aeiouyAEIOUY")
_HEX = re.compile(r"[0-9a-fA-F]+")
# Hex this long is a body (a key's, a digest's), not a word that happens to be hex.
_LONG_HEX = 24
# A short word glued to a long hex body: Twilio ``SK<hex>``, Databricks ``dapi<hex>``.
_GLUED_HEX = re.compile(rf"([A-Za-z0-9]{{0,7}}[G-Zg-z])([0-9a-fA-F]{{{_LONG_HEX},}})")
# Names of hash functions: what follows them (``sha256-<hex>``, ``sha384-<base64>``,
# ``sha256=<base64>``) is a digest, an indicator an analyst needs, in any encoding.
_HASH_NAMES = frozenset(
    {"md5", "sha", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3"}
    | {"blake2b", "blake2s", "blake3"}
)
# Words that say the hex glued to them is an address, a commit or a container id
# (``0x<hex>``, ``git-<sha>``, ``docker-<id>.scope``).
_HEX_ID_WORDS = _HASH_NAMES | {"0x", "git", "commit", "docker", "containerd", "crio", "libpod"}
# ULIDs (Crockford base32, 48-bit time first; Groq's batch ids hold one) are ids, not keys.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
# The SSH wire format starts with the key type's length and name: a public key, not a secret.
_SSH_KEY_TYPES = (b"ssh-", b"ecdsa-", b"sk-ssh-", b"sk-ecdsa-")

# Below this many bits of Shannon entropy per character a string repeats itself too much
# to be a key (a random string of 20 characters or more from a key alphabet has 3.3 to 5).
_MIN_ENTROPY = 3.0
# Share of a string's characters in word-like chunks (three letters or more, with a vowel)
# under which it is not made of words, and the mean chunk length under which it is cut
# into too many pieces to be an identifier. Measured on random strings of key alphabets
# (10,000 of each length, caught: base62 98.3% at 20 characters, 99.6% at 24, 99.9% at
# 40; lower case and digits 89.6% at 20, 99.5% at 32; letters alone, both cases, 85% to
# 96%) against the identifiers, paths and names of the Python packages this worker
# installs (none of 15,278 caught).
_WORD_SHARE = 0.6
_MEAN_CHUNK = 2.8
_SCATTERED_DIGIT_RUNS = 3


def _entropy(text: str) -> float:
    """Shannon entropy, bits per character."""
    n = len(text)
    return math.log2(n) - sum(count * math.log2(count) for count in Counter(text).values()) / n


def _chunks(text: str) -> list[str]:
    """Words of camelCase, ALLCAPS and lower case, and numbers: ``HTTP``, ``Pool``, ``11``."""
    return _CHUNK.findall(text)


def _digit_runs(chunks: list[str]) -> int:
    return sum(chunk[0].isdigit() for chunk in chunks)


def _unwritten(text: str) -> bool:
    """Mixed-case text not made of words (the chunk tests of ``looks_random``)."""
    chunks = _chunks(text)
    if len(text) < _MEAN_CHUNK * len(chunks) or _digit_runs(chunks) >= _SCATTERED_DIGIT_RUNS:
        return True  # what most random strings fail first: cheaper than counting words
    words = sum(
        len(chunk)
        for chunk in chunks
        if len(chunk) >= 3 and not chunk[0].isdigit() and not _VOWELS.isdisjoint(chunk)
    )
    return words < _WORD_SHARE * len(text)


def looks_random(core: str) -> bool:
    """Whether letters and digits (no separators) look drawn at random rather than written.

    Never when all digits, single-case letters only, or under 3 bits of entropy a
    character. Single-case with digits: random when the digits stand in three places or
    more (``NRAK-…``-style keys). Mixed case: random when under 60% of it is in chunks of
    three letters or more with a vowel (``User``, ``request``), or when it is cut into many
    short chunks (under 2.8 characters each on average), or with digits in three places or
    more.
    """
    if core.isdigit() or (core.isalpha() and (core.islower() or core.isupper())):
        return False
    if _entropy(core) < _MIN_ENTROPY:
        return False
    if core.islower() or core.isupper():
        return _digit_runs(_chunks(core)) >= _SCATTERED_DIGIT_RUNS
    return _unwritten(core)


def _is_word(piece: str) -> bool:
    """A piece an analyst reads: a word, a number, a short name, an identifier."""
    if piece.isdigit() or _ULID.fullmatch(piece):
        return True
    if piece.isalpha() and (piece.islower() or piece.isupper() or piece.istitle()):
        return True
    if piece.islower() or piece.isupper():
        # short names with digits: v1beta1, x86_64, 7c9f8d6b5 (a k8s pod's hash)
        return len(piece) <= 10 or not looks_random(piece)
    return not _unwritten(piece)


def _aws_secret(key: str) -> bool:
    """Of the 40 characters of ``_AWS_SECRET_SHAPE``: base64's own, and every class."""
    return (
        ("/" in key or "+" in key)
        and any(char.isupper() for char in key)
        and any(char.islower() for char in key)
        and any(char.isdigit() for char in key)
    )


def _is_ssh_public_key(part: str) -> bool:
    """Base64 whose first bytes are a length and an SSH key type: an ``authorized_keys``
    entry's body, public."""
    if not part.startswith("AAAA"):
        return False
    try:
        head = base64.b64decode(part[:24])
    except (binascii.Error, ValueError):
        return False
    return head[4:].startswith(_SSH_KEY_TYPES)


def _names_a_hash(part: str) -> bool:
    """``sha384-…`` (subresource integrity), or a hash function's name (``sha256=…``)."""
    return part.partition("-")[0].lower() in _HASH_NAMES


class _Part(Enum):
    WORDS = "words"  # stays
    HEX = "hex"  # stays, unless beside a key's other parts
    TOKEN = "token"  # a key by itself: a short word glued to long hex
    OTHER = "other"  # judged with its neighbours


def _hex_token(pieces: list[str]) -> bool | None:
    """True: long hex with a word glued to it (a vendor token); False: long hex named as a
    digest (``sha256-<hex>``, ``0x<hex>``); None: no long hex beside a word here."""
    for piece in pieces:
        glued = _GLUED_HEX.fullmatch(piece)
        if glued:
            return glued.group(1).lower() not in _HEX_ID_WORDS
    if not any(len(piece) >= _LONG_HEX and _HEX.fullmatch(piece) for piece in pieces):
        return None
    words = [piece.lower() for piece in pieces if not _HEX.fullmatch(piece)]
    return _HEX_ID_WORDS.isdisjoint(words)


def _judge(part: str) -> tuple[_Part, str]:
    """The part's kind, and the letters and digits of its pieces that are not words (its
    hex among them), which are judged with its neighbours'."""
    pieces = [piece for piece in _PIECE_SEPARATORS.split(part) if piece]
    if not pieces or _is_ssh_public_key(part) or _names_a_hash(part):
        return _Part.WORDS, ""
    hexes = [_HEX.fullmatch(piece) is not None for piece in pieces]
    if all(hexes):
        return _Part.HEX, "".join(pieces)
    token = _hex_token(pieces)
    if token is not None:
        return (_Part.TOKEN if token else _Part.WORDS), ""
    words = [_is_word(piece) for piece in pieces]
    if all(words):
        return _Part.WORDS, ""
    core = "".join(
        p for p, is_hex, word in zip(pieces, hexes, words, strict=True) if is_hex or not word
    )
    return _Part.OTHER, core


def key_spans(run: str) -> tuple[tuple[int, int], ...]:
    """The spans of ``run`` (a match of ``KEY_RUN``) that are keys, in order."""
    if _ONE_CASE_WORDS.fullmatch(run):
        return ()
    key = run.rstrip(".")
    if _AWS_SECRET_SHAPE.fullmatch(key) and _aws_secret(key):
        return ((0, len(key)),)
    if len(run) <= _CACHED_RUN:
        return _cached_key_spans(run)
    return _key_spans(run)


@functools.lru_cache(maxsize=4096)
def _cached_key_spans(run: str) -> tuple[tuple[int, int], ...]:
    return _key_spans(run)


def _key_spans(run: str) -> tuple[tuple[int, int], ...]:
    """Each part judged, then each group of neighbouring parts that are not words."""
    parts = [(match.start(), match.end(), match.group()) for match in _PART.finditer(run)]
    judged: list[tuple[_Part, str]] = []
    for _, _, text in parts:
        if judged and _names_a_hash(parts[len(judged) - 1][2]):
            # what follows a digest's name is the digest, whatever its encoding
            judged += [(_Part.WORDS, "")] * (len(parts) - len(judged))
            break
        judged.append(_judge(text))
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(parts):
        if judged[first][0] is _Part.WORDS:
            first += 1
            continue
        last = first
        while last + 1 < len(parts) and judged[last + 1][0] is not _Part.WORDS:
            last += 1
        group = judged[first : last + 1]
        kinds = {kind for kind, _ in group}
        core = "".join(core for _, core in group)
        if _Part.TOKEN in kinds or (
            _Part.OTHER in kinds and len(core) >= MIN_KEY_CHARS and looks_random(core)
        ):
            end = parts[last][1]
            if last == len(parts) - 1:  # base64 padding goes with the key
                end = len(run) - len(run[end:].lstrip("="))
            spans.append((parts[first][0], end))
        first = last + 1
    return tuple(spans)
