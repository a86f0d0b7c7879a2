"""The redaction rules: one table of credential and personal-data shapes, used both ways.

What goes to the model (the prompt scrubber, ``app.domain.prompt``) and what comes back
from it (the output sanitizer, ``app.domain.sanitize``) and what goes to a log line
(``app.runtime.logs``) are scrubbed with the same rules. Each match becomes a typed
placeholder an analyst can read (``[redacted:aws_access_key]``), so an insight can still
say "an AWS key was exposed"; a placeholder passes every rule unchanged, so scrubbing twice changes
nothing and counts nothing.

Credentials are always scrubbed: the formats named here, and keys of any other format,
found by their shape (``app.domain.secret_shapes``: a long random-looking run of a key
alphabet, or long hex behind a vendor's prefix) or after a credential's name (``API key
4b8e…``); those are ``[redacted:generic_secret]``, or the kind the name says. Personal
data (email addresses, payment card numbers, IBANs, phone numbers) is scrubbed when
``pii`` is true (``PROMPT_REDACT_PII``).

CPU: most text (ids, rule names, model prose) matches nothing, and Python's regex engine
is slow on long alternations. So every rule names the literal text it cannot do without
(its markers) and runs only when one of them is in the text: a substring test in C.
Rules whose shape has no literal (card numbers, IBANs, phone numbers) start with a
character class the engine scans for in C, and their validity checks (Luhn, mod 97)
run only on a candidate. Keys of unknown format are looked for with one compiled regex
for runs of 20 key characters or more, and only such a run is judged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from app.domain.secret_shapes import KEY_RUN, MIN_KEY_CHARS, key_spans, looks_random

__all__ = [
    "CREDENTIAL_KINDS",
    "PII_KINDS",
    "PLACEHOLDER",
    "Redactions",
    "placeholder",
    "redact",
]

PLACEHOLDER = re.compile(r"\[redacted:[a-z0-9_]+\]")
# A value already redacted: a placeholder, or the [REDACTED] of an echo or a known key.
_REDACTED_VALUE = re.compile(r"\[(?:REDACTED|redacted:[a-z0-9_]+)\]")

Redactions = dict[str, int]
"""How many matches of each kind were replaced (only kinds that matched)."""


def placeholder(kind: str) -> str:
    """The text that stands for a redacted value of ``kind``."""
    return f"[redacted:{kind}]"


@dataclass(frozen=True, slots=True)
class _Rule:
    """One shape: ``kind`` names the placeholder; the pattern runs only if a marker is in the text.

    ``folded``: the markers are lower-case and tested against the lower-cased text.
    ``keep``: an optional check of a match; False keeps the text (a failed Luhn check).
    ``group``: the part of the match that is replaced (0: all of it).
    """

    kind: str
    markers: tuple[str, ...]
    pattern: re.Pattern[str]
    folded: bool = False
    group: int = 0
    check: Callable[[str], bool] | None = None


# -- credentials ------------------------------------------------------------------------

_PEM = _Rule(
    "private_key",
    ("PRIVATE KEY",),
    # PEM private key blocks (RSA, EC, PKCS#8, OpenSSH, PGP), also when cut short, and
    # also inside JSON (a GCP service-account file), where the newlines are ``\n``.
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        re.DOTALL,
    ),
)

_TOKEN_RULES: tuple[_Rule, ...] = (
    _PEM,
    _Rule("groq_api_key", ("gsk_",), re.compile(r"\bgsk_[A-Za-z0-9]{20,}")),
    _Rule("anthropic_api_key", ("sk-ant-",), re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}")),
    _Rule(
        "openai_api_key",
        ("sk-",),
        re.compile(r"\bsk-(?:proj-|live-|test-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ),
    _Rule(
        "aws_access_key",
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA"),
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    ),
    _Rule(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b"),
    ),
    _Rule("github_token", ("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")),
    _Rule("gitlab_token", ("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    _Rule("slack_token", ("xox",), re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    _Rule(
        "slack_webhook",
        ("hooks.slack.com",),
        re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    ),
    _Rule("google_api_key", ("AIza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    _Rule(
        "stripe_key",
        ("k_live_", "k_test_"),
        re.compile(r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ),
    _Rule("npm_token", ("npm_",), re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    # An id of 17 characters (too short to judge by its shape) and 64 hex digits (shaped
    # like a SHA-256, which an analyst keeps): the one held-out format of issue #21 that
    # the rules for keys of unknown format cannot see.
    _Rule(
        "airtable_token",
        ("pat",),
        re.compile(r"\bpat[A-Za-z0-9]{14}\.[0-9a-f]{64}\b"),
    ),
    _Rule(
        "jwt",
        ("eyJ",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    ),
    _Rule(
        "azure_key",
        ("accountkey", "sharedaccesskey", "sharedaccesssignature"),
        # Azure storage / Service Bus connection strings: the key goes, the names stay.
        re.compile(
            r"(?i)\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)\s*=\s*([^;\s\"']+)"
        ),
        folded=True,
        group=1,
    ),
    _Rule(
        "bearer_token",
        ("bearer",),
        re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{12,})"),
        folded=True,
        group=1,
    ),
    _Rule(
        "basic_auth",
        ("basic",),
        re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{16,}={0,2})"),
        folded=True,
        group=1,
    ),
)


def _aws_secret_shape(value: str) -> bool:
    # 40 characters of base64 with upper, lower and digits: not a hex digest (lower-case
    # only), not a word, not a path of words.
    return (
        any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


# An AWS secret access key has no prefix: 40 base64 characters. Looked for only when the
# text speaks of AWS, of a secret, or holds an access key id.
_AWS_SECRET = _Rule(
    "aws_secret_key",
    ("aws", "secret", "akia", "asia"),
    re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
    folded=True,
    check=_aws_secret_shape,
)

# The key words of _SECRET_PAIR (lower-case): without one of them it cannot match.
_PAIR_MARKERS = ("pass", "pwd", "secret", "key", "token")

# key=value / key: value pairs whose value is a secret; the key is kept for context.
# The key may carry a prefix (``DB_PASSWORD``, ``aws_secret_access_key``, ``--password``,
# ``spring.datasource.password``); a value already redacted is taken whole. A key starts
# only after a character that cannot be part of one, which keeps the scan linear.
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (?<![A-Za-z0-9_.-])
    (
        [_.-]*(?:[a-z0-9]+[_.-])*
        (
            [a-z0-9]*pass(?:word|wd|phrase) | pwd | pass | secret | client[_-]?secret |
            api[_-]?key | access[_-]?key(?:[_-]?id)? | secret[_-]?access[_-]?key |
            private[_-]?key(?:[_-]?id)? | auth[_-]?token | access[_-]?token |
            refresh[_-]?token | token
        )
    )\b
    (\s*["']?\s*[:=]\s*)
    (\[(?:REDACTED|redacted:[a-z0-9_]+)\]|"[^"\n]*"|'[^'\n]*'|[^\s,;"'}\]]+)
    """
)
# Words that are also ordinary English: after them, ``key: word`` in a sentence ("first
# pass: the agent ...", "Token: the model ...") is prose, not a credential.
_WEAK_KEYS = frozenset({"pass", "pwd", "secret", "token"})
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]{0,11}")


def _already_redacted(value: str) -> bool:
    """A pair's value that is a placeholder, maybe quoted, maybe with an escaped newline
    (a PEM block redacted inside JSON): left as it is, not counted again."""
    if "[" not in value:
        return False
    rest = _REDACTED_VALUE.sub("", value)
    return len(rest) < len(value) and not rest.replace("\\n", "").strip("'\" ")


def _pair_kind(base: str) -> str:
    base = base.lower().replace("-", "_")
    if "pass" in base or base.startswith("pwd"):
        return "password"
    if base == "secret_access_key" or base == "secretaccesskey":
        return "aws_secret_key"
    if base.startswith("private"):
        return "private_key"
    if "api" in base:
        return "api_key"
    if base.startswith("access") and "key" in base:
        return "access_key"
    if "secret" in base:
        return "secret"
    return "token"


# user:password@host in URLs (connection strings; the user may be empty, as in
# ``redis://:password@host``): the password goes. The scheme starts
# only where a run of scheme characters starts, so a long run is scanned once, not
# once per word boundary in it (which was quadratic).
_URL_PASSWORD = re.compile(
    r"((?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(@)"
)

# ``?key=...`` / ``&sig=...`` in query strings: short parameter names that are secrets in
# a URL (Google ``key=``, Azure SAS ``sig=``) but ordinary words elsewhere.
_QUERY_SECRET = re.compile(r"(?i)(?<=[?&])(key|sig|signature|apikey|auth)=([^&\s#\"'<>]+)")

# -- credentials of unknown format (issue #21) -------------------------------------------

GENERIC_SECRET = "generic_secret"

# A key named in prose, with nothing between the word and the value: ``API key 4b8e…``,
# ``the secret Hk3/pQ9…``, ``token 7f3k…``. (``key: value`` and ``key=value`` are pairs.)
_KEYWORD_VALUE = re.compile(
    r"""(?ix)
    \b(api[\ _-]?key|key|token|secret|credential|pass(?:word|wd|phrase)?|pwd)s?
    \s+(?:(?:is|was)\s+)?
    ([A-Za-z0-9_+/.~=-]{16,})
    """
)
_KEYWORD_MARKERS = (*_PAIR_MARKERS, "credential")
_KEYWORD_KINDS = {"api": "api_key", "key": "secret", "tok": "token", "sec": "secret"}
# Certificates and public keys are base64 too, and public: their bodies are left as they are.
_PUBLIC_PEM = re.compile(
    r"-----BEGIN (?:CERTIFICATE|[A-Z0-9 ]*PUBLIC KEY(?: BLOCK)?|X509 CRL|CERTIFICATE REQUEST)-----"
    r".*?(?:-----END [A-Z0-9 ]+-----|\Z)",
    re.DOTALL,
)
_TRAILING = ".-_~="
# Longer texts are split into words first: faster than the regex's scan when none is long.
_SPLIT_FIRST = 256


def _keyword_kind(word: str) -> str:
    word = word.lower()
    if word.startswith(("pass", "pwd")):
        return "password"
    return _KEYWORD_KINDS.get(word[:3], "secret")


def _keyed_value(value: str) -> bool:
    """A value after a credential's name is one when it is key-shaped: 16 letters and
    digits or more, both, as hex or drawn at random."""
    core = "".join(char for char in value if char.isalnum())
    if len(core) < 16 or core.isdigit() or core.isalpha():
        return False
    return all(char in "0123456789abcdefABCDEF" for char in core) or looks_random(core)


def _redact_unknown_formats(text: str, found: Redactions | None) -> str:
    """Keys of formats no rule names: after a credential's name, or by their shape."""
    lower = text.lower()
    if any(marker in lower for marker in _KEYWORD_MARKERS):

        def keyword(match: re.Match[str]) -> str:
            value = match.group(2).rstrip(_TRAILING)
            if not _keyed_value(value):
                return match.group(0)
            kind = _keyword_kind(match.group(1))
            _count(found, kind)
            start = match.start(2) - match.start()
            return f"{match.group(0)[:start]}{placeholder(kind)}{match.group(2)[len(value) :]}"

        text = _KEYWORD_VALUE.sub(keyword, text)

    if len(text) > _SPLIT_FIRST and max(map(len, text.split())) < MIN_KEY_CHARS:
        return text  # no word long enough to hold a key (a run holds no whitespace)
    public = [m.span() for m in _PUBLIC_PEM.finditer(text)] if "-----BEGIN" in text else []

    def shapes(match: re.Match[str]) -> str:
        run = match.group()
        if any(start <= match.start() < end for start, end in public):
            return run
        spans = key_spans(run)
        if not spans:
            return run
        token = placeholder(GENERIC_SECRET)
        kept = 0
        parts = []
        for start, end in spans:
            _count(found, GENERIC_SECRET)
            parts += [run[kept:start], token]
            kept = end
        parts.append(run[kept:])
        return "".join(parts)

    return KEY_RUN.sub(shapes, text)


# -- personal data ------------------------------------------------------------------------

# The local part starts where a run of its characters starts (linear scan), and not after
# ``/``: ``ssh://git@github.com`` names a host's user, not a person.
_EMAIL = _Rule(
    "email",
    ("@",),
    re.compile(
        r"(?<![A-Za-z0-9._%+/-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
    ),
)


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_number(value: str) -> bool:
    digits = value.replace(" ", "").replace("-", "")
    separators = {c for c in value if c in " -"}
    return 13 <= len(digits) <= 19 and len(separators) <= 1 and _luhn(digits)


# 13 to 19 digits, single spaces or dashes allowed between them, starting with the major
# industry identifiers of payment cards (2 to 6: Mastercard, Amex, Visa, Discover, ...),
# which leaves out epoch milliseconds and most numeric ids; then a Luhn check.
_CARD = _Rule(
    "card_number",
    (),
    re.compile(r"(?<![\w.+-])[2-6](?:[ -]?\d){12,18}(?![\w.]|[ -]?\d)"),
    check=_card_number,
)


def _iban(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rotated = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rotated)
    return int(number) % 97 == 1


# Two capital letters, two check digits, then groups of letters and digits (printed in
# fours or not at all); mod 97 decides.
_IBAN = _Rule(
    "iban",
    (),
    re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b"),
    check=_iban,
)

# Phone numbers, in the two shapes text writes them in without ambiguity: international
# (``+`` and 8 to 15 digits, single spaces, dots, dashes or a parenthesised area code
# between groups), and North American (``(415) 555-0132``, ``415-555-0132``,
# ``415.555.0132``). Bare digit runs are not phone numbers here: timestamps, ids, ports
# and versions look the same.
_PHONE_INTL = _Rule(
    "phone_number",
    ("+",),
    re.compile(
        r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w.:+]|[ .-]?\d)"
    ),
    check=lambda value: 8 <= sum(c.isdigit() for c in value) <= 15,
)
_PHONE_NANP = _Rule(
    "phone_number",
    (),
    re.compile(r"(?<![\w.+-])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}([-.]))\d{3}[-.]\d{4}(?![\w.]|[-.]?\d)"),
    check=lambda value: value[0] == "(" or value[3] == value[7],
)

_PII_RULES: tuple[_Rule, ...] = (_EMAIL, _IBAN, _CARD, _PHONE_INTL, _PHONE_NANP)

CREDENTIAL_KINDS = frozenset(
    {rule.kind for rule in (*_TOKEN_RULES, _AWS_SECRET)}
    | {"password", "secret", "api_key", "access_key", "token", "url_secret", GENERIC_SECRET}
)
PII_KINDS = frozenset(rule.kind for rule in _PII_RULES)


# -- applying them -------------------------------------------------------------------------


def _count(found: Redactions | None, kind: str) -> None:
    if found is not None:
        found[kind] = found.get(kind, 0) + 1


def _apply(rule: _Rule, text: str, found: Redactions | None) -> str:
    token = placeholder(rule.kind)

    def replace(match: re.Match[str]) -> str:
        value = match.group(rule.group)
        if rule.check is not None and not rule.check(value):
            return match.group(0)
        if rule.group and _REDACTED_VALUE.fullmatch(value):
            return match.group(0)
        _count(found, rule.kind)
        if rule.group == 0:
            return token
        start, end = match.span(rule.group)
        whole_start = match.start()
        whole = match.group(0)
        return whole[: start - whole_start] + token + whole[end - whole_start :]

    return rule.pattern.sub(replace, text)


def _has_marker(rule: _Rule, text: str, lower: str) -> bool:
    if not rule.markers:
        return True
    haystack = lower if rule.folded else text
    return any(marker in haystack for marker in rule.markers)


# Every marker of the token rules once, with its rule: one pass of substring tests picks
# the few rules worth running (most text has no marker at all).
_CASE_MARKERS = tuple(
    (marker, index)
    for index, rule in enumerate(_TOKEN_RULES)
    if not rule.folded
    for marker in rule.markers
)
_FOLDED_MARKERS = tuple(
    (marker, index)
    for index, rule in enumerate(_TOKEN_RULES)
    if rule.folded
    for marker in rule.markers
)
_DIGIT = re.compile(r"\d")
# A card number holds 13 digits or more; without 8 in a row (single separators allowed)
# the card rule cannot match.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){7}")


def redact(
    text: str, *, pii: bool = True, found: Redactions | None = None, unknown_formats: bool = True
) -> str:
    """``text`` with every credential (and, if ``pii``, personal data) replaced by a placeholder.

    Each replacement is counted by kind in ``found`` when it is given. ``unknown_formats``
    False leaves out the rules for keys of unknown format (a credential's name before a
    key-shaped value; the shape of a key): only to measure what they add.
    """
    lower = text.lower()
    hits = {index for marker, index in _CASE_MARKERS if marker in text}
    hits.update(index for marker, index in _FOLDED_MARKERS if marker in lower)
    for index in sorted(hits):
        text = _apply(_TOKEN_RULES[index], text, found)
    if hits:
        lower = text.lower()
    if len(text) >= 40 and _has_marker(_AWS_SECRET, text, lower):
        text = _apply(_AWS_SECRET, text, found)
        lower = text.lower()
    if any(marker in lower for marker in _PAIR_MARKERS):

        def pair(match: re.Match[str]) -> str:
            key, base, separator, value = match.group(1, 2, 3, 4)
            if _already_redacted(value):
                return match.group(0)
            prose = (
                base.lower() in _WEAK_KEYS
                and "=" not in separator
                and not separator.rstrip().endswith(("'", '"'))
                and _PLAIN_WORD.fullmatch(value) is not None
            )
            if prose:
                return match.group(0)
            kind = _pair_kind(base)
            _count(found, kind)
            return f"{key}{separator}{placeholder(kind)}"

        text = _SECRET_PAIR.sub(pair, text)
    if "://" in text:

        def url_password(match: re.Match[str]) -> str:
            if _REDACTED_VALUE.fullmatch(match.group(2)):
                return match.group(0)
            _count(found, "password")
            return f"{match.group(1)}{placeholder('password')}{match.group(3)}"

        text = _URL_PASSWORD.sub(url_password, text)
    if "=" in text and ("?" in text or "&" in text):

        def query(match: re.Match[str]) -> str:
            if _REDACTED_VALUE.fullmatch(match.group(2)):
                return match.group(0)
            _count(found, "url_secret")
            return f"{match.group(1)}={placeholder('url_secret')}"

        text = _QUERY_SECRET.sub(query, text)
    if pii:
        if "@" in text:
            text = _apply(_EMAIL, text, found)
        if _DIGIT.search(text):
            text = _apply(_IBAN, text, found)
            if _DIGIT_RUN.search(text):
                text = _apply(_CARD, text, found)
            if "+" in text:
                text = _apply(_PHONE_INTL, text, found)
            text = _apply(_PHONE_NANP, text, found)
    if unknown_formats:
        text = _redact_unknown_formats(text, found)
    return text
