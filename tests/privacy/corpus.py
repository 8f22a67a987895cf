# ruff: noqa: E501  (one planted form per line reads better than wrapped ones)
"""Planted secrets (fake, right shape) and ordinary text that must be left alone.

``PLANTS`` maps each kind to several forms, each a sentence with exactly one hit of
that kind; ``SECRET_VALUES`` are the substrings that must not survive anywhere.
Values are made from a fixed seed, so a run is repeatable; none is a real credential.
"""

from __future__ import annotations

import random
import string

from milady_lab.privacy.rules import bip39_words

_rng = random.Random(13)
_ALNUM = string.ascii_letters + string.digits
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_HEX = "0123456789abcdef"


def rand(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _with_digit(n: int, alphabet: str = _ALNUM) -> str:
    return rand(n - 1, alphabet) + _rng.choice(string.digits)


def _words(n: int) -> list[str]:
    words = bip39_words()
    return [_rng.choice(words) for _ in range(n)]


def _pem(kind: str, closed: bool = True) -> str:
    body = "\n".join(rand(64, _ALNUM + "+/") for _ in range(5))
    end = f"\n-----END {kind}PRIVATE KEY-----" if closed else ""
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}{end}"


def _jwt() -> str:
    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{rand(40, _ALNUM + '_-')}.{rand(43, _ALNUM + '_-')}"


#: (kind, [(text with one hit, the secret substring)])
PLANTS: dict[str, list[tuple[str, str]]] = {}


def _plant(kind: str, template: str, secret: str) -> None:
    PLANTS.setdefault(kind, []).append((template.format(s=secret), secret))


for k in ("RSA ", "OPENSSH ", "EC ", ""):
    _plant("private_key_block", "here is my deploy key:\n{s}\nplease keep it safe", _pem(k))
_plant("private_key_block", "the key file starts like this {s}", _pem("RSA ", closed=False))
for url, pw in (
    ("postgresql://milady:{pw}@db.internal.example.com:5432/agent", _with_digit(14)),
    ("mongodb+srv://admin:{pw}@cluster0.ab1cd.mongodb.net/test", _with_digit(12)),
    ("redis://:{pw}@cache.example.org:6379/0", _with_digit(20)),
    ("https://bob:{pw}@git.example.com/repo.git", "hunter2" + rand(4)),
):
    _plant("url_password", "DATABASE_URL=" + url.replace("{pw}", "{s}"), pw)
_plant("jwt", "Authorization: Bearer {s}", _jwt())
_plant("jwt", "the session cookie was {s} and it expired", _jwt())
_plant("anthropic_key", "ANTHROPIC_API_KEY={s}", "sk-ant-api03-" + rand(93, _ALNUM + "_-") + "AA")
_plant("anthropic_key", "use this one: {s} for claude", "sk-ant-admin01-" + rand(60, _ALNUM))
_plant("openai_key", "my openai key is {s} lol", "sk-proj-" + rand(120, _ALNUM + "_-") + "x")
_plant("openai_key", "OPENAI_API_KEY='{s}'", "sk-" + rand(48))
_plant("openai_key", "service account {s} works", "sk-svcacct-" + rand(64, _ALNUM + "-_") + "z")
_plant("groq_key", "GROQ_API_KEY={s}", "gsk_" + rand(52))
_plant("groq_key", "groq: {s}", "gsk_" + rand(52))
_plant("google_api_key", "gemini key {s} (restricted)", "AIza" + rand(35, _ALNUM + "_-"))
_plant("google_api_key", '"GOOGLE_API_KEY": "{s}"', "AIza" + rand(35, _ALNUM + "_-"))
_plant(
    "aws_access_key",
    "aws_access_key_id = {s}",
    "AKIA" + rand(16, string.ascii_uppercase + string.digits),
)
_plant(
    "aws_access_key",
    "temporary creds {s} from sts",
    "ASIA" + rand(16, string.ascii_uppercase + string.digits),
)
_plant("aws_secret_key", "aws_secret_access_key = {s}", rand(40, _ALNUM + "/+"))
_plant("aws_secret_key", 'export AWS_SECRET_ACCESS_KEY="{s}"', rand(40, _ALNUM + "/+"))
_plant("github_token", "git clone with {s} please", "ghp_" + rand(36))
_plant("github_token", "GITHUB_TOKEN={s}", "github_pat_11A" + rand(19) + "_" + rand(59))
_plant("github_token", "oauth {s} from the app", "gho_" + rand(36))
_plant("gitlab_token", "CI uses {s} to push", "glpat-" + rand(20, _ALNUM + "_-"))
_plant("gitlab_token", "deploy token: {s}", "gldt-" + rand(24, _ALNUM))
_plant(
    "slack_token",
    "SLACK_BOT_TOKEN={s}",
    f"xoxb-{rand(11, string.digits)}-{rand(13, string.digits)}-{rand(24)}",
)
_plant(
    "slack_token",
    "post to {s} when done",
    "https://hooks.slack.com/services/T" + rand(8) + "/B" + rand(10) + "/" + rand(24),
)
_plant(
    "slack_token",
    "user token {s}",
    f"xoxp-{rand(12, string.digits)}-{rand(12, string.digits)}-{rand(32, _HEX)}",
)
_plant(
    "discord_token",
    "DISCORD_API_TOKEN={s}",
    "M" + rand(25, _ALNUM) + "." + rand(6, _ALNUM) + "." + rand(38, _ALNUM + "_-"),
)
_plant(
    "discord_token",
    "bot login: {s}",
    "O" + rand(23, _ALNUM) + "." + rand(6, _ALNUM) + "." + rand(27, _ALNUM),
)
_plant(
    "telegram_bot_token",
    "TELEGRAM_BOT_TOKEN={s}",
    rand(10, string.digits) + ":AA" + rand(33, _ALNUM + "_-"),
)
_plant(
    "telegram_bot_token",
    "botfather gave me {s}",
    rand(9, string.digits) + ":AA" + rand(33, _ALNUM + "_-"),
)
_plant("stripe_key", "STRIPE_SECRET_KEY={s}", "sk_live_" + rand(99))
_plant("stripe_key", "restricted {s} for reports", "rk_test_" + rand(24))
_plant("stripe_key", "webhook signing secret {s}", "whsec_" + rand(32))
_plant(
    "sendgrid_key",
    "SENDGRID_API_KEY={s}",
    "SG." + rand(22, _ALNUM + "_-") + "." + rand(43, _ALNUM + "_-"),
)
_plant(
    "bearer_token",
    "curl -H 'Authorization: Bearer {s}' https://api.example.com",
    rand(40, _ALNUM + "._-"),
)
_plant("bearer_token", "Authorization: token {s}", rand(32, _HEX))
_plant("bearer_token", "header was Authorization: Basic {s}", rand(28, _ALNUM) + "==")
_plant("password", "db password={s} for prod", "hunter2" + rand(5))
_plant("password", "PASSWD: {s}", "S3cr3t!" + rand(6))
_plant("password", 'api_key = "{s}"', rand(30, _HEX) + "9")
_plant("password", "my password is {s} dont tell", "tr0ub4dor&3" + rand(3))
_plant("password", "client_secret: {s}", rand(24, _ALNUM) + "7")
_plant("token", "session token: {s}", rand(40, _ALNUM))
_plant("token", "the signing secret -> {s}", rand(44, _ALNUM + "+/"))
_plant("token", "license key = {s}", rand(36, _ALNUM))
_plant("eth_private_key", "export PRIVATE_KEY=0x{s}", rand(64, _HEX))
_plant("eth_private_key", "private key: {s}", rand(64, _HEX + "ABCDEF"))
_plant("eth_private_key", "import this into metamask {s} thanks", "0x" + rand(64, _HEX))
_plant("btc_private_key", "wif {s} (uncompressed)", "5H" + rand(49, _B58))
_plant("btc_private_key", "my btc key {s}", "L" + rand(51, _B58))
_plant("btc_private_key", "xpriv {s}", "xprv9s21ZrQH143K" + rand(95, _B58))
_plant("solana_private_key", "phantom export: {s}", rand(88, _B58))
_plant("solana_private_key", "solana key {s} ok", rand(87, _B58))
_plant("mnemonic", "my seed phrase is {s} pls help", " ".join(_words(12)))
_plant("mnemonic", "recovery words:\n{s}\nend", "\n".join(_words(24)))
_plant("mnemonic", "backup: {s}.", " ".join(f"{i}. {w}" for i, w in enumerate(_words(12), 1)))
_plant("mnemonic", "words {s} restore", ", ".join(_words(18)))
_plant("email", "reach me at {s} anytime", "kai.tanaka+milady@example.com")
_plant("email", "<{s}>", "remi_w@mail.subdomain.example.co.uk")
_plant("email", "cc {s}.", "SOL99@Example.ORG")
_plant("phone", "call me on {s} tonight", "+14155552671")
_plant("phone", "uk number {s} ok", "+44 20 7946 0958")
_plant("phone", "office {s} ext 4", "(415) 555-2671")
_plant("phone", "text {s} please", "415-555-2671")
_plant("phone", "landline {s}", "020 7946 0958")
_plant("ip_address", "ssh root@{s} -p 22", "203.0.113.42")
_plant("ip_address", "my home ip is {s}", "192.168.1.20")
_plant("ip_address", "server {s} is down", "2001:db8:85a3::8a2e:370:7334")
_plant("ip_address", "full {s} addr", "2001:0db8:85a3:0000:0000:8a2e:0370:7334")
_plant("ip_address", "link local {s} here", "fe80::1ff:fe23:4567:890a")

SECRET_VALUES: list[str] = [s for forms in PLANTS.values() for _t, s in forms]

#: Ordinary text that contains no secret and must come out exactly as it went in.
CLEAN: list[str] = [
    "I asked about the skill of tasks, the risk of whiskey and a sketch on my desk; ask away",
    "scikit-learn (sk-learn) is great; try sk-learn-model-selection-guide and task-queue-runner",
    "colours: #ff00aa, #FFF, #1e90ff, rgb(255, 0, 170) and 0xFF00AA for the hex lovers",
    "numbers: 42, 3.14, 1,000,000, $1,299.99, 12.5%, build 1234567, order #12345, room 404",
    "dates: 2026-01-31T14:22:44.501Z, 31/01/2026, Jan 31, 2026 at 14:22:44, ts 1769869367922",
    "public eth address 0x71C7656EC7ab88b098defB751B7401B5f6d8976F, send there",
    "btc: 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa or bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "solana wallet 7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU and So11111111111111111111111111111111111111112",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it",
    'password = os.environ["DB_PASSWORD"]\napi_key = get_api_key()\nsecret = None',
    "const token = req.headers.authorization;\nif (secret == null) { return; }",
    'def connect(host="localhost", port=5432):\n    return psycopg.connect(f"postgresql://{host}:{port}/app")',
    "SELECT * FROM users WHERE id = 42 AND created_at > '2026-01-01';",
    "curl http://127.0.0.1:8080/health and http://localhost:3000 and [::1]:8080",
    "use std::vector; let x = a::b::c; Foo::bar::baz()",
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun all day long",
    "write in lowercase, warm and a little teasing; keep replies short: one to three sentences",
    "gm @milady! the internet is softer at 3am. who else is still up~",
    "the password policy says: at least twelve characters. your token expires in 30 minutes",
    "email me via the contact form, not at user@localhost; version 2.14.1 is out",
    "call 911 in an emergency; isbn 978-3-16-148410-0; the score was 3-2",
]
