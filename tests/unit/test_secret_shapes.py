"""The shape of a key: random runs of key alphabets are keys, words, hashes and ids are not."""

from __future__ import annotations

import random
import string

import pytest

from app.domain.secret_shapes import KEY_RUN, key_spans, looks_random

BASE62 = string.ascii_letters + string.digits


def _masked(text: str) -> str:
    """``text`` with every key span of every run replaced by ``<key>``."""
    out, kept = [], 0
    for run in KEY_RUN.finditer(text):
        for start, end in key_spans(run.group()):
            out += [text[kept : run.start() + start], "<key>"]
            kept = run.start() + end
    out.append(text[kept:])
    return "".join(out)


@pytest.mark.parametrize(("alphabet", "length"), [(BASE62, 24), (BASE62, 40), (BASE62 + "+/", 64)])
def test_random_strings_of_key_alphabets_look_random(alphabet: str, length: int) -> None:
    """At least 99% of 1,000 seeded random strings of a key alphabet are judged random."""
    rng = random.Random(f"{alphabet}{length}")
    strings = ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(1000)]
    caught = sum(looks_random("".join(c for c in s if c.isalnum())) for s in strings)
    assert caught >= 990


@pytest.mark.parametrize(
    "core",
    [
        "InvoiceReconciliationServiceImpl",
        "AsyncHTTP11ConnectionPoolManager",
        "Draft202012Validator",
        "rotateServiceAccountCredentials",
        "podfailurepolicyonexitcodes",
        "GROQMODELDEEP",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "aAaAaAaAaAaAaAaAaAaAaAaA",  # mixed, but repeats itself: under 3 bits a character
        "17955732001231795573200123",
    ],
)
def test_written_names_and_numbers_do_not_look_random(core: str) -> None:
    """Identifiers, words, alphabets, repeats and numbers are not keys."""
    assert not looks_random(core)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("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", "SG.<key>"),
        (
            "POST https://paste.example/u/Zk3Lm9Pq2Xr7Tv4Wn8Yc1Hb6",
            "POST https://paste.example/u/<key>",
        ),
        ("FOO_TOKEN=Xk9aB3mQ2pL7wZ4rT8yC1vN6hJ5kD0s;", "FOO_TOKEN=<key>;"),
        ("Hk3/pQ9xLm2Zr7Tb+Wc5Nv8Yd1Fg4Js6Ka0Qe3Ru in a file", "<key> in a file"),
        ("AWS's own example wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY.", "AWS's own example <key>."),
        ("padded Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4cXV4Zm9v==.", "padded <key>."),
        ("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", "<key>"),
        ("47473efe1e44021b21c13b8f9dedf98f-us12", "<key>"),
        ("dapid71545f42f7b100ba5dbeac0c4472111", "<key>"),
    ],
)
def test_a_key_goes_and_the_words_around_it_stay(text: str, masked: str) -> None:
    """Only the random part of a run is a key: the vendor's prefix, the host, the name stay;
    a word glued to long hex is a vendor token."""
    assert _masked(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "docker-4c01db0b339c3c7b5f6a84e10e1d6b8ad3f4c2b1a9e8d7c6b5a4f3e2d1c0b9a8.scope",
        "sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC",
        "123e4567-e89b-12d3-a456-426614174000",
        "batch_01hx4y7z8k9m2n3p4q5r6s7t8v",
        "payments-worker-7c9f8d6b5-xk2lp",
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "//github.com/unknown-org/tools.git",
        "/opt/app/node_modules/@aws-sdk/credential-provider-node/dist-cjs/index.js",
        "test_the_retry_budget_is_spent_before_the_dead_letter_queue_receives_it",
        "cryptography-42.0.5-cp39-abi3-manylinux_2_28_x86_64.whl",
    ],
)
def test_hashes_ids_names_and_paths_stay(text: str) -> None:
    """Digests (named or not), UUIDs, ULIDs, k8s names, public keys, paths and identifiers."""
    assert _masked(text) == text
