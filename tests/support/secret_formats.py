"""Credential formats no rule was written for: the held-out table of issue #21.

One row per format, from public secret scanners' rule sets (the rule's name in gitleaks'
default config unless another scanner is named), each quoted in a finding the way a
gateway's check would. The values are fake: random characters of each format's alphabet
and length, drawn once with a fixed seed (``random.Random(2111)``); none is a real key.

Held out: no named rule of ``app.domain.redaction`` knows these formats, so only the rules
for keys of unknown format (their shape, or a credential's name before them) can catch
them; ``named`` marks the few a named rule had to be written for, and why is said there.
Where only part of a credential is secret (a Telegram bot's id, a Terraform token's id),
the template holds the public part and ``value`` the secret one.

Two formats are caught by their context only, which is honest about what a shape can say:
a Twilio auth token is 32 hex digits and a Heroku API key a UUID, the shapes of an MD5 and
of a request id, so each is masked when a credential's name stands before it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FORMATS", "HELD_OUT", "Format"]


@dataclass(frozen=True)
class Format:
    rule: str
    """The rule's name in the scanner's set."""
    scanner: str
    template: str
    """A finding quoting the credential where ``{}`` stands."""
    value: str
    """The secret: must not survive scrubbing."""
    named: bool = False
    """A named rule of ``app.domain.redaction`` covers it (not held out)."""
    by_name: bool = False
    """Shaped like a hash or an id: caught only with a credential's name before it."""

    @property
    def text(self) -> str:
        return self.template.format(self.value)

    @property
    def id(self) -> str:
        return self.rule.replace(" ", "_").replace(",", "")


FORMATS: tuple[Format, ...] = (
    Format(
        "twilio-api-key",
        "gitleaks",
        "Twilio API key {} found in a build log",
        "SKbfbe3e7e0a0702567f1dad385fbe8fd2",
    ),
    Format(
        "twilio auth token",
        "trufflehog Twilio",
        "Twilio account AC4ee56ef14902453d8a1019da97775f08 with auth token {} in a cron job",
        "2d56a3323f61ba306bac0da480fb22ec",
        by_name=True,
    ),
    Format(
        "sendgrid-api-token",
        "gitleaks",
        "mail sent with {} from a notebook",
        "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",
    ),
    Format(
        "mailgun-private-api-token",
        "gitleaks",
        "Mailgun {} in the script's arguments",
        "key-94de64f1c80efacc93bba26bd555e022",
    ),
    Format(
        "mailchimp-api-key",
        "gitleaks",
        "newsletter export used {}",
        "47473efe1e44021b21c13b8f9dedf98f-us12",
    ),
    Format(
        "shopify-access-token",
        "gitleaks",
        "{} read from the store's app settings",
        "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",
    ),
    Format(
        "atlassian-api-token",
        "gitleaks",
        "Jira call authenticated with {}",
        (
            "ATATT3xFfGF0YnNL-X8fxDbYOagkNqSpI2_o6gY4UwX8VGkmemq2uRopS6VXbc_8waZXQiW6D4C1"
            "8jHq2SoFhB-vBuKEmW76HuZ1XeUFlxrMTJdQqIHhQD5dZeV4UZTy9-CBppEjKbilx6kBR0nIYsGe"
            "cOSWZyTmO1EN1hqhXgte4hwMtCvKnX-=7FDC57E8"
        ),
    ),
    Format(
        "heroku-api-key",
        "gitleaks",
        "Heroku API key {} printed by the CLI",
        "cdda41ff-42e4-7fad-395e-a6b52ccd7864",
        by_name=True,
    ),
    Format(
        "heroku-api-key-v2",
        "gitleaks",
        "{} exported by the agent",
        "HRKU-AAolRmEPU_4Rqp-u_Dv4OpddjdSAfdbjP2Ix5VMg2ChUravod2AtfsUCVHLj",
    ),
    Format(
        "square-access-token",
        "gitleaks",
        "payment call with {} from a test script",
        "sq0atp-DNn06iKtnyfuKPd4uWcBp2",
    ),
    Format(
        "square oauth secret",
        "detect-secrets SquareOAuthDetector",
        "Square app config holds {}",
        "sq0csp-U-7AXQUb6kxLcBRbnBmrrcBnRvJPtRtlu6P8E584QIF",
    ),
    Format(
        "pypi-upload-token",
        "gitleaks",
        "twine upload -u __token__ -p {} dist/*",
        (
            "pypi-AgEIcHlwaS5vcmcPjFGO7Ziwt06qdiFIjwMmGVgsNyUzIlUFNKSdCLECgCEg841WqENamSA"
            "XqHQa8vtQjasmSZ-XTS2WLKtysbTt-DHWJccQPtlZr9y23KbJf2J2NivfyIjl7jg"
        ),
    ),
    Format(
        "huggingface-access-token",
        "gitleaks",
        "model pulled with {} from the hub",
        "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",
    ),
    Format(
        "digitalocean-pat",
        "gitleaks",
        "doctl auth init --access-token {}",
        "dop_v1_868128e24a499fa691d7db07ba610999b5511adc259f3279c433986a927f000e",
    ),
    Format(
        "doppler-api-token",
        "gitleaks",
        "doppler run with {}",
        "dp.pt.T2NZZz9VS5FHPOnaUlLITASS9TtE75da9fuTiaIPF7c",
    ),
    Format(
        "linear-api-key",
        "gitleaks",
        "Linear GraphQL call with {}",
        "lin_api_TuUkuyiN7sWR59gFH9dpMofjkluU8Tfwx4ivw6p4",
    ),
    Format(
        "databricks-api-token",
        "gitleaks",
        "databricks CLI profile holds {}",
        "dapid71545f42f7b100ba5dbeac0c4472111",
    ),
    Format(
        "vault-service-token",
        "gitleaks",
        "VAULT_ADDR set and {} in the shell history",
        (
            "hvs.CAESIxD2kTBVH-9bWxdwNvXtVY9hfvlpm20OHe5tfnCZhi-2ZtjR9IIGww5sMoVBrZ8R1mUm"
            "K_phL6Aon_ebg42blzWZU53"
        ),
    ),
    Format(
        "postman-api-token",
        "gitleaks",
        "Postman collection run with {}",
        "PMAK-e70f8367851478309ed9940e-e69890c72e000a7aacc25560871ee5df66",
    ),
    Format(
        "figma personal access token",
        "trufflehog FigmaPersonalAccessToken",
        "design export with {}",
        "figd_2hAkq-DNmIPGxeqt7Jru5FS6vzjzu7y90xK8FdXM",
    ),
    Format(
        "discord bot token",
        "detect-secrets DiscordBotTokenDetector",
        "bot started with {}",
        "N7AIHkMJ61Qdv7IxTfwSYAwS.dJOiE0.GdxO8rrd8scJ2OB4zxTpAt-EDWl",
    ),
    Format(
        "telegram-bot-api-token",
        "gitleaks",
        "https://api.telegram.org/bot3332142929:{}/sendMessage called",
        "AApj43r6qgUHpwDjvcKcH8oe5qheAX2nHOX",
    ),
    Format(
        "azure-ad-client-secret",
        "gitleaks",
        "client credentials flow with {} for tenant contoso",
        "RaY3Q~GgAabsgmeep9I3Z4dn1QD.~pMCeWlD-jeE",
    ),
    Format(
        "gcp oauth access token",
        "trufflehog GCPApplicationDefaultCredentials",
        "gsutil call replayed {} against storage.googleapis.com",
        (
            "ya29.cnld511aaNUCkf0RYxQMNel4AyLGnOuBkx6OAAQR-gsP3ao2Z31NnfcVtUAQfDherginblK"
            "UCU-kVzExtlA92er49OTFq9XuqZTyNxUuM8-HUW9Hh_Z2LNzOtXOhVhEQryKiZvbWKIJkFYw-4Zz"
            "3a1"
        ),
    ),
    Format(
        "dropbox-short-lived-api-token",
        "gitleaks",
        "Dropbox upload with {}",
        (
            "sl.uINqY2EoMsHz7pc0SrKNQgfT1eqFKHlzTNqSXVWNoDbKqnmlU4_TaqHz-6yTgzRHPMaIbKUV3"
            "97ME4WQ-sklKVP94F_JaeC1Z9Di1a0BzQk6kNcerjWifTG-pznEvHSNadxZEoT"
        ),
    ),
    Format(
        "airtable-personnal-access-token",
        "gitleaks",
        "Airtable base read with {}",
        "patfxqQwPF5GUWGWW.3dd162aae644a0f8dd48ec100a1bd9acc607172cf2f85f469247111d88adb728",
        named=True,
    ),
    Format(
        "okta-access-token",
        "gitleaks",
        "Okta admin API called with SSWS {}",
        "00Zw1f6PKAE_YnnQKnITTocFM-06YVByEUM79rSPB_",
    ),
    Format(
        "new-relic-user-api-key",
        "gitleaks",
        "New Relic NerdGraph query with {}",
        "NRAK-I1JGILQH2JVYAE5RTYABDG1XICT",
    ),
    Format(
        "sentry-org-token",
        "gitleaks",
        "sentry-cli releases new used {}",
        (
            "sntrys_eyJpYXQiOjE3OTU1NzMyMDAuMCwidXJsIjoiaHR0cHM6Ly9zZW50cnkuaW8iLCJyZWdpb"
            "25fdXJsIjoiaHR0cHM6Ly91cy5zZW50cnkuaW8iLCJvcmciOiJhY21lIn0_lejwPGikzmHrP9jSx"
            "rjQreaX8XGdj/I7a7mBTk3xLXX"
        ),
    ),
    Format(
        "sentry-user-token",
        "gitleaks",
        "sentry-cli login with {}",
        "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",
    ),
    Format(
        "grafana-service-account-token",
        "gitleaks",
        "dashboard pushed with {}",
        "glsa_lz5e3OS8rTAtMYVjh8WrmNQu4AN3LSr9_35905a2a",
    ),
    Format(
        "grafana-cloud-api-token",
        "gitleaks",
        "Grafana Cloud stack created with {}",
        (
            "glc_9BuqKXld+i6gYd3+cADCz4TjWT4EG4eI04Aju+8OSKZxnlqTCZ1TDlzyBwSBrhl7HKwakXD+"
            "KRnuoLHfp4+8oZK7ajNadOXqmOcy"
        ),
    ),
    Format(
        "pulumi-api-token",
        "gitleaks",
        "pulumi login with {}",
        "pul-875e7b59330cca3c8a75dc80b9c466afbe827269",
    ),
    Format(
        "netlify-access-token",
        "gitleaks",
        "netlify deploy --auth {}",
        "nfp_HeYNPlwVhUKCww0FuUQ3fwG645PRw1qAgJEZ",
    ),
    Format(
        "flyio-access-token",
        "gitleaks",
        "flyctl deploy with {}",
        "fo1_ZvVhkL0A3hNF4YkF2TtFgBxr3GvWT5LjwrVClDoghRb",
    ),
    Format(
        "supabase access token",
        "trufflehog SupabaseToken",
        "supabase link used {}",
        "sbp_2c15c8c3609af68a3817bc955c4e67ecdd581b0c",
    ),
    Format(
        "cloudflare-api-key",
        "gitleaks",
        "DNS record changed with {}",
        "SkYS6LMSiygvdKNRZBFiN5XauKhHCVbpqsLpEMyo",
    ),
    Format(
        "alibaba-access-key-id",
        "gitleaks",
        "aliyun configure set {}",
        "LTAIg6JplxftXQZZvzroVR7N",
    ),
    Format(
        "tencent cloud secret id",
        "trufflehog TencentCloudKey",
        "tccli configured with {}",
        "AKID5OEEKrN0LtgruVj0F6JtSGnJEi3J55mu",
    ),
    Format(
        "aws secret access key, free-standing",
        "issue #21",
        "the agent wrote {} to ~/.config/app.ini",
        "/at22hAXOIeyNqqwkeLcoSbUttgAwJdCNvOhVyrs",
    ),
    Format(
        "perplexity-api-key",
        "gitleaks",
        "search tool called with {}",
        "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",
    ),
    Format(
        "notion-api-token",
        "gitleaks",
        "Notion page export with {}",
        "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",
    ),
    Format(
        "readme-api-token",
        "gitleaks",
        "docs synced with {}",
        "rdme_nrvnci56nrlfi8pbhyo6u0wfxbz4jgfv7y34yw8gno5a40e6aj505ydvbq9cd2nlpck925",
    ),
    Format(
        "rubygems-api-token",
        "gitleaks",
        "gem push with {}",
        "rubygems_2ecf4de9c9fbdc9b44b449c2172d907724f9bbf0288cad58",
    ),
    Format(
        "planetscale-api-token",
        "gitleaks",
        "pscale connect used {}",
        "pscale_tkn_ykohqYnZKlqXu90iPXHE6v9heZGxTvNPXNorWGWOcjk",
    ),
    Format(
        "age-secret-key",
        "gitleaks",
        "sops decrypted with {}",
        "AGE-SECRET-KEY-1EF9UYRCKKVERG5VETR4VTHWRP0ZRRG2ALLKR6M9XHQP6V02QRXJ2T953MP",
    ),
    Format(
        "slack-app-token",
        "gitleaks",
        "socket mode app started with {}",
        (
            "xapp-1-AQ3P1TXA6VV-4237440249468-1d5055a3f78768188cb73b8b98b83b84115e16bae19"
            "2f80d2479440a8ee0ab41"
        ),
    ),
    Format(
        "dynatrace-api-token",
        "gitleaks",
        "OneAgent installer fetched with {}",
        (
            "dt0c01.ZDKYKQ2XXYZ7MPIS11BK84JN.OI9EVSUBZNUJS92EYRF5UXELJNYMU6EUDL8CEYOQIC5P"
            "CIYVNKQEB3B0DAN9CFHE"
        ),
    ),
    Format(
        "easypost-api-token",
        "gitleaks",
        "shipping label bought with {}",
        "EZAKXLtR8IIhUcG1j5SU75xTv6aYGHPHcLKrTQlbSLUkyIWSXM7JGWSgar",
    ),
    Format(
        "octopus-deploy-api-key",
        "gitleaks",
        "release created with {}",
        "API-LG0CIMNXPYBPQC2V1PHEQ8NWIJ",
    ),
    Format(
        "mapbox secret token",
        "trufflehog Mapbox",
        "tiles uploaded with {}",
        "sk.eyJ1IjoiYWNtZS1iaWxsaW5nIiwiYSI6ITkPUFJ8qtWMcwBZGwLNlRRmD.MG633rzDt50rrzcw9NkXOh",
    ),
    Format(
        "azure storage account key, free-standing",
        "detect-secrets AzureStorageKeyDetector",
        "blob copied with {}",
        "+OXF1RUzM2agPBzbHI/ow18zFqPhSlS+s7KhIbs+0m4whdy0Ax6vnNMe/vkBr5VPv+qGRlWg0VD0iEY2v5/zFy==",
    ),
    Format(
        "discord webhook",
        "trufflehog DiscordWebhook",
        "POST https://discord.com/api/webhooks/1183364750218731520/{}",
        "OmddC0Hqau3kASLdGXl-WfIt_JP1bItJe-TPCtNG49m8Y3NYBLnpJiEO-f932a9_v7ix",
    ),
    Format(
        "1password-service-account-token",
        "gitleaks",
        "op read with {}",
        (
            "ops_eyJzaWduSW5BZGRyZXNzIjoibXkuMXBhc3N3b3JkLmNvbSIsh3k2lzz6bpw1QIEArtY69Lfp"
            "9PtlblTNdtPQSbw1j0qk0fhrzPBPsEQ3MUMCrsG2NxMb/G9novcDSymY3/yH7dmuIk67WKptQkzP"
            "YqTwS+4zzwcBebP+5Bd+hxXiyK9RoW6ax/tzF8ioB2WYx8TFitvV2EGLoE4qex47c4Vay6Rq+3aw"
            "RfJOOMsoCbCjBH5ZZbbGoHaO"
        ),
    ),
    Format(
        "clickhouse-cloud-api-secret-key",
        "gitleaks",
        "ClickHouse Cloud query with {}",
        "4b1dGD5Zzs956QNjLRbPQNt0UgSTaVeWDwLcDmwwBj",
    ),
    Format(
        "infracost-api-token",
        "gitleaks",
        "infracost breakdown with {}",
        "ico-v402qoDpxYVdC2fbDFRAW3JreVwU5Yte",
    ),
    Format(
        "prefect-api-token",
        "gitleaks",
        "prefect cloud login -k {}",
        "pnu_fJWrWhZpj6wjAlkJFSY9kKbeVOkaGWQ8Rqlw",
    ),
    Format(
        "frameio-api-token",
        "gitleaks",
        "asset uploaded with {}",
        "fio-u-WR5HW82c20of4AnW-PXpRgp8Nd4I7JWw0Vbpi_e7z73qj3xbJ9PI_RqtDxJAEZMY",
    ),
    Format(
        "hashicorp-tf-api-token",
        "gitleaks",
        "terraform login stored r3ki2e0j5lcugm.atlasv1.{}",
        "8KY1v0NEqFOEYDEWYBGMPfWfu3F1PW3fBZD-zu0lmRDeQ6eYw8AOrjDYuPv2-lWbMTG",
    ),
    Format(
        "duffel-api-token",
        "gitleaks",
        "flight booked with {}",
        "duffel_live_keIOB_06rfXNsxIXIjQ0Ugna27vqUn5e05Xc2A3V3Eq",
    ),
    Format(
        "yandex-api-key",
        "gitleaks",
        "translation call with {}",
        "AQVN1Og3aTcugSmwgOHyqeyxJBy6fqJBwwdobt39",
    ),
    Format(
        "maxmind-license-key",
        "gitleaks",
        "geoipupdate ran with {}",
        "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",
    ),
    Format(
        "scalingo-api-token",
        "gitleaks",
        "scalingo login --api-token {}",
        "tk-us-lQazHwNvqoINeu05hx18rlndUw5Ad0-XT1SOi_9R5whcGr6i",
    ),
    Format(
        "openshift-user-token",
        "gitleaks",
        "oc login --token {}",
        "sha256~I8HsI7n9tYTkrThZpsvSObl2fQg8W6GOGj7M6YIsFP6",
    ),
)

HELD_OUT: tuple[Format, ...] = tuple(f for f in FORMATS if not f.named)
