"""What must never reach the model: one row per kind of secret or personal data.

Used by the prompt scrubber's tests, the output sanitizer's tests and the real-process test
against the fake Groq. Each row: a name, the placeholder kind it becomes, a finding text
(the way a scanner quotes what it saw) and the parts of it that must not survive. The
first thirteen are the ones issue #13 found reaching the model verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CREDENTIAL_ROWS", "PII_ROWS", "ROWS", "Row"]


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    text: str
    secrets: tuple[str, ...]
    pii: bool = False

    @property
    def id(self) -> str:
        return self.name.replace(" ", "_")


_PEM_BODY = (
    "MIIEowIBAAKCAQEA7vXq8ZrLq3mN5pT2wY9zB4cD6eF8gH0jK2lM4nO6pQ8rS0tU2vW4xY6zA8bC0dE2fG4h\n"
    "J6kL8mN0oP2qR4sT6uV8wX0yZ2aB4cD6eF8gH0jK2lM4nO6pQ8rS0tU2vW4xY6zA8bC0dE2fG4hJ6kL8mN0"
)
_OPENSSH_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQ"
_GCP_KEY_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"

CREDENTIAL_ROWS: tuple[Row, ...] = (
    # -- the thirteen of the issue ------------------------------------------------------
    Row(
        "aws access key id",
        "aws_access_key",
        "AWS access key id AKIAZ7XQ4PLM2NB6VC3D found in the tool arguments",
        ("AKIAZ7XQ4PLM2NB6VC3D",),
    ),
    Row(
        "aws secret access key",
        "aws_secret_key",
        "AWS secret key Hk3/pQ9xLm2Zr7Tb+Wc5Nv8Yd1Fg4Js6Ka0Qe3Ru written to a file",
        ("Hk3/pQ9xLm2Zr7Tb+Wc5Nv8Yd1Fg4Js6Ka0Qe3Ru",),
    ),
    Row(
        "github token",
        "github_token",
        "GitHub token ghp_Xc9Lk2Mn4Pq6Rs8Tv0Wx2Yz4Ab6Cd8Ef0Gh2J passed to git push",
        ("ghp_Xc9Lk2Mn4Pq6Rs8Tv0Wx2Yz4Ab6Cd8Ef0Gh2J",),
    ),
    Row(
        "openai key",
        "openai_api_key",
        "OpenAI key sk-proj-Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz1Xc3Vb5Nm7 in an environment variable",
        ("sk-proj-Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz1Xc3Vb5Nm7",),
    ),
    Row(
        "groq key",
        "groq_api_key",
        "the agent printed gsk_Zx8Cv6Bn4Mq2Wl9Ek7Rj5Th3Yg1Uf0Id8Os6Pa4 to stdout",
        ("gsk_Zx8Cv6Bn4Mq2Wl9Ek7Rj5Th3Yg1Uf0Id8Os6Pa4",),
    ),
    Row(
        "slack bot token",
        "slack_token",
        "Slack token xoxb-482915736204-5830172649513-Qm7Xv2Lp9Rk4Wn6Zt8Yc1Hb3 sent to a webhook",
        ("xoxb-482915736204-5830172649513-Qm7Xv2Lp9Rk4Wn6Zt8Yc1Hb3",),
    ),
    Row(
        "stripe live key",
        "stripe_key",
        "Stripe live key sk_live_51Hq8Zp2Lk9Xw4Rt7Mn3Bv6Cy1 in a config file",
        ("sk_live_51Hq8Zp2Lk9Xw4Rt7Mn3Bv6Cy1",),
    ),
    Row(
        "jwt",
        "jwt",
        "session cookie eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6"
        "ImFkbWluIn0.kX9pL2mQ7rT4vW1yZ8aB5cD3eF6gH0jK2lM4nO6pQ8s replayed",
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
            "eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFkbWluIn0",
            "kX9pL2mQ7rT4vW1yZ8aB5cD3eF6gH0jK2lM4nO6pQ8s",
        ),
    ),
    Row(
        "pem private key",
        "private_key",
        "file content: -----BEGIN RSA PRIVATE KEY-----\n"
        + _PEM_BODY
        + "\n-----END RSA PRIVATE KEY----- uploaded",
        ("MIIEowIBAAKCAQEA7vXq8ZrLq3mN5pT2", "J6kL8mN0oP2qR4sT6uV8wX0yZ2aB4cD6"),
    ),
    Row(
        "password pair",
        "password",
        "command line contains password=Tr0ub4dor&3xyz for the admin user",
        ("Tr0ub4dor&3xyz", "&3xyz"),
    ),
    Row(
        "connection string password",
        "password",
        "connects to postgres://app_user:S3cretPassw0rd@db.internal:5432/billing",
        ("S3cretPassw0rd",),
    ),
    # -- beyond the list ----------------------------------------------------------
    Row(
        "anthropic key",
        "anthropic_api_key",
        "Anthropic key sk-ant-api03-Hj7Kl9Mn2Pq4Rs6Tv8Wx0Yz2Ab4Cd6Ef8Gh0Ij2Kl4 in .env",
        ("sk-ant-api03-Hj7Kl9Mn2Pq4Rs6Tv8Wx0Yz2Ab4Cd6Ef8Gh0Ij2Kl4",),
    ),
    Row(
        "gcp service account json",
        "private_key",
        '{"type": "service_account", "project_id": "billing-prod", "private_key_id": '
        '"3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a", "private_key": "-----BEGIN PRIVATE '
        "KEY-----\\n" + _GCP_KEY_BODY + '\\n-----END PRIVATE KEY-----\\n", "client_email": '
        '"reader@billing-prod.iam.gserviceaccount.com"}',
        (_GCP_KEY_BODY, "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a"),
    ),
    Row(
        "azure storage connection string",
        "azure_key",
        "DefaultEndpointsProtocol=https;AccountName=billingstore;AccountKey="
        "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4cXV4Zm9v==;"
        "EndpointSuffix=core.windows.net",
        ("Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4",),
    ),
    Row(
        "azure service bus key",
        "azure_key",
        "Endpoint=sb://orders.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=q8Vt3Lm9Xz2Wp5Rk7Ny1Hb4Jc6Gd0Fs8Ea3Qu5Oi7=",
        ("q8Vt3Lm9Xz2Wp5Rk7Ny1Hb4Jc6Gd0Fs8Ea3Qu5Oi7",),
    ),
    Row(
        "authorization bearer",
        "bearer_token",
        "request header Authorization: Bearer 7f3k9Qp2Lx8Zr4Tm6Wn1Yc5Hb0Jd3Gs",
        ("7f3k9Qp2Lx8Zr4Tm6Wn1Yc5Hb0Jd3Gs",),
    ),
    Row(
        "api_key in a query string",
        "api_key",
        "GET https://api.weather.example/v1/forecast?city=Lyon&api_key=4b8e2f9c1d7a3e6b5f0c",
        ("4b8e2f9c1d7a3e6b5f0c",),
    ),
    Row(
        "key in a query string",
        "url_secret",
        "fetched https://maps.example.com/api/geocode?address=Lyon&key=Qm7Xv2Lp9Rk4Wn6Zt8Yc",
        ("Qm7Xv2Lp9Rk4Wn6Zt8Yc",),
    ),
    Row(
        "ssh private key",
        "private_key",
        "cat ~/.ssh/id_ed25519 returned -----BEGIN OPENSSH PRIVATE KEY-----\n" + _OPENSSH_BODY,
        (_OPENSSH_BODY,),
    ),
    Row(
        "github fine-grained token",
        "github_token",
        "token github_pat_11ABCDEFG0Hj7Kl9Mn2Pq4_Rs6Tv8Wx0Yz2Ab4Cd6Ef8Gh0Ij2Kl4Mn6 used",
        ("github_pat_11ABCDEFG0Hj7Kl9Mn2Pq4_Rs6Tv8Wx0Yz2Ab4Cd6Ef8Gh0Ij2Kl4Mn6",),
    ),
    Row(
        "google api key",
        "google_api_key",
        "Google key AIzaSyB7x9Qp2Lm4Rt6Vw8Yz0Ac2Eg4Ik6Mo8Qs in the app bundle",
        ("AIzaSyB7x9Qp2Lm4Rt6Vw8Yz0Ac2Eg4Ik6Mo8Qs",),
    ),
    Row(
        "client secret pair",
        "secret",
        "OAuth client_secret: Gx7Pq2Lm9Zr4Tk6Wn1Yc from the config",
        ("Gx7Pq2Lm9Zr4Tk6Wn1Yc",),
    ),
)

PII_ROWS: tuple[Row, ...] = (
    Row(
        "card number",
        "card_number",
        "payment card 4111 1111 1111 1111 sent in a form field",
        ("4111 1111 1111 1111",),
        pii=True,
    ),
    Row(
        "email address",
        "email",
        "customer email jane.doe+billing@example.org exported to a spreadsheet",
        ("jane.doe+billing@example.org",),
        pii=True,
    ),
    Row(
        "card number with dashes",
        "card_number",
        "card 5555-5555-5555-4444 echoed in the response",
        ("5555-5555-5555-4444",),
        pii=True,
    ),
    Row(
        "iban",
        "iban",
        "wire to IBAN DE89 3704 0044 0532 0130 00 prepared by the agent",
        ("DE89 3704 0044 0532 0130 00", "3704 0044 0532"),
        pii=True,
    ),
    Row(
        "international phone number",
        "phone_number",
        "SMS sent to +44 20 7946 0958 without consent",
        ("+44 20 7946 0958", "7946 0958"),
        pii=True,
    ),
    Row(
        "north american phone number",
        "phone_number",
        "called (415) 555-0132 from the support tool",
        ("555-0132",),
        pii=True,
    ),
)

ROWS: tuple[Row, ...] = CREDENTIAL_ROWS + PII_ROWS
