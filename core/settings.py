"""Typed, frozen settings read once from ``KEYS_*`` environment variables.

Code receives the ``Settings`` object (or the values it needs); nothing else reads the
environment. Outside development the app refuses to start without a real secret key and a
public base URL, because a defaulted secret is a forged session waiting to happen.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from flask import current_app

ENVIRONMENTS = ("development", "production")
MAIL_BACKENDS = ("smtp", "outbox")
LABEL_LAYOUTS = ("4x6", "a4", "letter")
# The boxes of the UPU's CN22 form; the declaration ticks one.
CN22_CATEGORIES = (
    "Gift",
    "Documents",
    "Commercial sample",
    "Returned goods",
    "Sale of goods",
    "Other",
)
# The length of shipment.carrier, which stores the name.
CARRIER_NAME_MAX_LENGTH = 40

# Countries the programme ships to by default (ISO 3166-1 alpha-2; the United Kingdom is GB).
DEFAULT_COUNTRIES = ("AT", "BE", "CA", "FR", "DE", "IT", "JP", "ES", "CH", "GB", "US")

# Words from tutorials and templates; a secret containing one is a placeholder. They are long
# enough that a random secret never contains one by chance.
_PLACEHOLDER_WORDS = ("change", "secret", "placeholder", "example", "never-guess", "replace")
_MIN_SECRET_LENGTH = 32
_MIN_DISTINCT_CHARACTERS = 12

_DEFAULT_INSTANCE = Path(__file__).resolve().parents[1] / "instance"


class SettingsError(ValueError):
    """A ``KEYS_*`` variable is missing or malformed; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable about one deployment of the programme."""

    environment: str = "production"
    demo_mode: bool = False
    secret_key: str = field(repr=False)
    database_url: str
    base_url: str
    instance_path: Path = _DEFAULT_INSTANCE
    # Rate-limit counters: memory:// counts inside one process, so every gunicorn worker
    # would grant its own allowance; production shares them in Redis.
    ratelimit_storage_url: str = "memory://"
    # Reverse proxies in front of the app (nginx, Caddy) whose X-Forwarded-For/-Proto/-Host
    # are trusted: 0 trusts none, so a client cannot forge its address past a rate limit.
    proxy_hops: int = 0

    mail_backend: str = "smtp"
    mail_from: str = "Security Key Giveaway <keys@localhost>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    # Each wait for the relay, in a task consumer (requests never talk to it).
    smtp_timeout_seconds: float = 5.0

    # Background work (core.tasks): sqlite:///FILE for one machine, redis://… for several;
    # memory:// and immediate:// run tasks inside one process, for tests.
    task_queue_url: str = f"sqlite:///{_DEFAULT_INSTANCE / 'tasks.sqlite3'}"
    # Consumers check in this often; a task whose consumer missed six check-ins is taken over.
    task_check_in_seconds: float = 5.0
    # /healthz answers 503 when no consumer checked in for this long.
    task_consumer_silence_seconds: int = 60
    # SQLite only: the queue copies the database here nightly (keys-YYYY-MM-DD.sqlite3).
    backup_directory: Path | None = None

    programme_opens_at: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    programme_closes_at: datetime = datetime(2027, 11, 1, tzinfo=UTC)
    countries: tuple[str, ...] = DEFAULT_COUNTRIES
    keys_per_maintainer: int = 2
    claim_code_expiry_days: int = 30
    # Parcels' names, phones and addresses are erased this many days after the claim is
    # activated or ends (`claims purge-personal-data`).
    personal_data_days: int = 30
    critical_percent: float = 1.0
    critical_sticky: bool = True
    # Programme staff are emailed once when available keys fall below each of these.
    low_stock_alerts: tuple[int, ...] = (400, 100)

    sign_in_link_minutes: int = 15
    # A staff member's first security key needs an enrolment link from an admin; it works once.
    staff_enrolment_hours: int = 72
    # Sign-in sessions are kept on the server and end after this long unused, or this long
    # after sign-in at the most.
    staff_session_idle_minutes: int = 120
    staff_session_hours: int = 12
    maintainer_session_idle_days: int = 14
    maintainer_session_days: int = 30
    max_request_bytes: int = 2 * 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024

    # Shipping labels: the default layout, the sender, and the CN22 customs declaration. Weight
    # and value are per key; the declaration multiplies them by the keys in the parcel.
    label_layout: str = "4x6"
    return_address: tuple[str, ...] = (
        "Security Key Giveaway",
        "Example Str. 1",
        "10115 Berlin",
        "GERMANY",
    )
    origin_country: str = "DE"
    customs_goods_origin: str = ""  # where the keys were made; empty: origin_country
    customs_category: str = "Gift"
    customs_description: str = "Security key (USB authenticator)"
    customs_weight_grams: int = 30
    customs_value: str = "25.00"
    customs_currency: str = "EUR"
    hs_code: str = "8471.80"
    # Carrier name → tracking page, with {tracking} where the number goes.
    carrier_tracking_urls: tuple[tuple[str, str], ...] = (
        ("DHL", "https://www.dhl.com/global-en/home/tracking.html?tracking-id={tracking}"),
        ("UPS", "https://www.ups.com/track?tracknum={tracking}"),
        ("FedEx", "https://www.fedex.com/fedextrack/?trknbr={tracking}"),
    )

    @property
    def carriers(self) -> tuple[str, ...]:
        """The carriers parcels ship with, as configured."""
        return tuple(name for name, _url in self.carrier_tracking_urls)

    def carrier_named(self, name: str) -> str:
        """The configured spelling of a carrier named in any case ("dhl" → "DHL"), or "" for
        a carrier the programme does not ship with."""
        wanted = name.strip().casefold()
        return next((known for known in self.carriers if known.casefold() == wanted), "")

    def tracking_url(self, carrier: str, tracking_number: str) -> str:
        """The carrier's tracking page for a parcel, or "" for a carrier without one."""
        template = dict(self.carrier_tracking_urls).get(self.carrier_named(carrier), "")
        return template.replace("{tracking}", quote(tracking_number, safe="")) if template else ""

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @property
    def https(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def rp_id(self) -> str:
        """The WebAuthn relying-party ID: the host of the public origin."""
        return urlsplit(self.base_url).hostname or "localhost"

    def replace(self, **changes: object) -> Settings:
        """A copy with some values changed, validated like the original."""
        updated = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        updated.validate()
        return updated

    def validate(self) -> None:
        """Refuse a configuration that would be unsafe or meaningless."""
        if self.environment not in ENVIRONMENTS:
            raise SettingsError(f"KEYS_ENV must be one of {', '.join(ENVIRONMENTS)}")
        if self.mail_backend not in MAIL_BACKENDS:
            raise SettingsError(f"KEYS_MAIL_BACKEND must be one of {', '.join(MAIL_BACKENDS)}")
        if not self.development:
            _require_real_secret(self.secret_key)
            # Both show every sign-in link and claim code at /dev/outbox, to anyone.
            if self.demo_mode:
                raise SettingsError(
                    "KEYS_DEMO_MODE=1 shows every sign-in link and claim code to anyone and "
                    "lets staff skip their security key; it runs only with KEYS_ENV=development"
                )
            if self.mail_backend == "outbox":
                raise SettingsError(
                    "KEYS_MAIL_BACKEND=outbox keeps mail in the database for anyone to read "
                    "at /dev/outbox; it runs only with KEYS_ENV=development"
                )
        _validate_ratelimit_storage(self.ratelimit_storage_url, development=self.development)
        if not 0 <= self.proxy_hops <= 5:
            raise SettingsError(
                "KEYS_PROXY_HOPS must be between 0 (no proxy) and 5: the number of reverse "
                "proxies in front of the app"
            )
        if not self.base_url:
            raise SettingsError("KEYS_BASE_URL is required outside development")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError("KEYS_BASE_URL must be an origin like https://keys.example.org")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise SettingsError("KEYS_BASE_URL must be an origin without a path")
        if _is_ip_address(parts.hostname):
            raise SettingsError(
                "KEYS_BASE_URL must name a host (keys.example.org, or localhost), not an IP "
                "address: browsers refuse security keys on an IP address"
            )
        if not self.development and parts.scheme != "https" and not _is_loopback(parts.hostname):
            raise SettingsError("KEYS_BASE_URL must use https outside development")
        if self.programme_closes_at <= self.programme_opens_at:
            raise SettingsError("KEYS_PROGRAMME_CLOSES must be after KEYS_PROGRAMME_OPENS")
        if not self.countries:
            raise SettingsError("KEYS_COUNTRIES must name at least one country")
        if not 1 <= self.keys_per_maintainer <= 10:
            raise SettingsError("KEYS_KEYS_PER_MAINTAINER must be between 1 and 10")
        if not 1 <= self.staff_session_idle_minutes <= 60 * self.staff_session_hours <= 60 * 24:
            raise SettingsError(
                "KEYS_STAFF_SESSION_IDLE_MINUTES must be at least 1 and at most "
                "KEYS_STAFF_SESSION_HOURS, which is at most 24"
            )
        if not 1 <= self.maintainer_session_idle_days <= self.maintainer_session_days <= 90:
            raise SettingsError(
                "KEYS_MAINTAINER_SESSION_IDLE_DAYS must be at least 1 and at most "
                "KEYS_MAINTAINER_SESSION_DAYS, which is at most 90"
            )
        if self.claim_code_expiry_days < 1:
            raise SettingsError("KEYS_CLAIM_CODE_EXPIRY_DAYS must be at least 1")
        # At least a day: a damaged key is reported after delivery, and its replacement goes
        # to the same address.
        if not 1 <= self.personal_data_days <= 3650:
            raise SettingsError("KEYS_PERSONAL_DATA_DAYS must be between 1 and 3650")
        if not 0 < self.critical_percent <= 100:
            raise SettingsError("KEYS_CRITICAL_PERCENT must be above 0 and at most 100")
        if self.sign_in_link_minutes < 1:
            raise SettingsError("KEYS_SIGN_IN_LINK_MINUTES must be at least 1")
        if not 0 < self.smtp_timeout_seconds <= 20:
            raise SettingsError("KEYS_SMTP_TIMEOUT_SECONDS must be above 0 and at most 20")
        _validate_task_queue(self.task_queue_url)
        if self.backup_directory is not None and not self.database_url.startswith("sqlite"):
            raise SettingsError(
                "KEYS_BACKUP_DIRECTORY copies an SQLite database; dump PostgreSQL with pg_dump "
                "(README, Backups)"
            )
        if not 0.1 <= self.task_check_in_seconds <= 60:
            raise SettingsError("KEYS_TASK_CHECK_IN_SECONDS must be between 0.1 and 60")
        if not 6 * self.task_check_in_seconds <= self.task_consumer_silence_seconds <= 3600:
            raise SettingsError(
                "KEYS_TASK_CONSUMER_SILENCE_SECONDS must be at least six check-ins "
                "(6 × KEYS_TASK_CHECK_IN_SECONDS) and at most 3600"
            )
        if not 1 <= self.staff_enrolment_hours <= 14 * 24:
            raise SettingsError("KEYS_STAFF_ENROLMENT_HOURS must be between 1 and 336 (14 days)")
        self._validate_labels()

    def _validate_labels(self) -> None:
        if self.label_layout not in LABEL_LAYOUTS:
            raise SettingsError(f"KEYS_LABEL_LAYOUT must be one of {', '.join(LABEL_LAYOUTS)}")
        if not self.return_address or not all(line.strip() for line in self.return_address):
            raise SettingsError("KEYS_RETURN_ADDRESS must be lines separated by |, none empty")
        for name, code in (
            ("KEYS_ORIGIN_COUNTRY", self.origin_country),
            ("KEYS_CUSTOMS_GOODS_ORIGIN", self.customs_goods_origin or self.origin_country),
        ):
            if not re.fullmatch(r"[A-Z]{2}", code):
                raise SettingsError(f"{name} must be an ISO country code like DE")
        if self.customs_category not in CN22_CATEGORIES:
            raise SettingsError(
                f"KEYS_CUSTOMS_CATEGORY must be one of {', '.join(CN22_CATEGORIES)}"
            )
        if (
            not 1 <= len(self.customs_description) <= 60
            or not self.customs_description.isprintable()
        ):
            raise SettingsError("KEYS_CUSTOMS_DESCRIPTION must be 1 to 60 printable characters")
        if not 1 <= self.customs_weight_grams <= 2000:
            raise SettingsError("KEYS_CUSTOMS_WEIGHT_GRAMS must be between 1 and 2000")
        if not re.fullmatch(r"\d{1,6}\.\d{2}", self.customs_value):
            raise SettingsError("KEYS_CUSTOMS_VALUE must be an amount like 25.00")
        if not re.fullmatch(r"[A-Z]{3}", self.customs_currency):
            raise SettingsError("KEYS_CUSTOMS_CURRENCY must be an ISO 4217 code like EUR")
        if not re.fullmatch(r"\d{4}(\.\d{2}){0,2}", self.hs_code):
            raise SettingsError("KEYS_HS_CODE must be a tariff number like 8471.80")
        self._validate_carriers()

    def _validate_carriers(self) -> None:
        if not self.carrier_tracking_urls:
            raise SettingsError("KEYS_CARRIER_TRACKING must name at least one carrier")
        seen: set[str] = set()
        for name, url in self.carrier_tracking_urls:
            # A parcel stores its carrier's name in 40 characters (shipment.carrier).
            if not name or len(name) > CARRIER_NAME_MAX_LENGTH:
                raise SettingsError(
                    f"KEYS_CARRIER_TRACKING: a carrier's name has 1 to "
                    f"{CARRIER_NAME_MAX_LENGTH} characters, not {name[:50]!r}"
                )
            # Carriers are matched in any case ("dhl" in a manifest is DHL).
            if name.casefold() in seen:
                raise SettingsError(f"KEYS_CARRIER_TRACKING names the carrier {name!r} twice")
            seen.add(name.casefold())
            if not url.startswith("https://") or "{tracking}" not in url:
                raise SettingsError(
                    f"KEYS_CARRIER_TRACKING: the tracking page of {name} must be an https:// "
                    "URL with {tracking} where the number goes"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate the settings from an environment mapping."""
        env = _Reader(environ)
        environment = env.text("KEYS_ENV", "production")
        demo_mode = env.flag("KEYS_DEMO_MODE", False)
        instance_path = Path(env.text("KEYS_INSTANCE_PATH", str(_DEFAULT_INSTANCE)))
        development = environment == "development"

        secret_key = env.text("KEYS_SECRET_KEY", "")
        if not secret_key and development:
            # A fresh secret per process: sessions do not survive a restart, which is fine
            # for a laptop and means no secret ever ships in the code.
            secret_key = secrets.token_urlsafe(48)

        base_url = env.text("KEYS_BASE_URL", "http://localhost:5000" if development else "")
        settings = cls(
            environment=environment,
            demo_mode=demo_mode,
            secret_key=secret_key,
            database_url=env.text(
                "KEYS_DATABASE_URL", f"sqlite:///{instance_path / 'keys.sqlite3'}"
            ),
            base_url=base_url.rstrip("/"),
            instance_path=instance_path,
            ratelimit_storage_url=env.text(
                "KEYS_RATELIMIT_STORAGE_URL", "memory://" if development else ""
            ),
            proxy_hops=env.integer("KEYS_PROXY_HOPS", cls.proxy_hops),
            mail_backend=env.text("KEYS_MAIL_BACKEND", "outbox" if demo_mode else "smtp"),
            mail_from=env.text("KEYS_MAIL_FROM", cls.mail_from),
            smtp_host=env.text("KEYS_SMTP_HOST", cls.smtp_host),
            smtp_port=env.integer("KEYS_SMTP_PORT", cls.smtp_port),
            smtp_timeout_seconds=env.number("KEYS_SMTP_TIMEOUT_SECONDS", cls.smtp_timeout_seconds),
            task_queue_url=env.text(
                "KEYS_TASK_QUEUE_URL", f"sqlite:///{instance_path / 'tasks.sqlite3'}"
            ),
            task_check_in_seconds=env.number(
                "KEYS_TASK_CHECK_IN_SECONDS", cls.task_check_in_seconds
            ),
            task_consumer_silence_seconds=env.integer(
                "KEYS_TASK_CONSUMER_SILENCE_SECONDS", cls.task_consumer_silence_seconds
            ),
            backup_directory=Path(directory)
            if (directory := env.text("KEYS_BACKUP_DIRECTORY", ""))
            else None,
            smtp_starttls=env.flag("KEYS_SMTP_STARTTLS", cls.smtp_starttls),
            smtp_username=env.text("KEYS_SMTP_USERNAME", ""),
            smtp_password=env.text("KEYS_SMTP_PASSWORD", ""),
            programme_opens_at=env.instant("KEYS_PROGRAMME_OPENS", cls.programme_opens_at),
            programme_closes_at=env.instant("KEYS_PROGRAMME_CLOSES", cls.programme_closes_at),
            countries=env.countries("KEYS_COUNTRIES", DEFAULT_COUNTRIES),
            keys_per_maintainer=env.integer("KEYS_KEYS_PER_MAINTAINER", cls.keys_per_maintainer),
            claim_code_expiry_days=env.integer(
                "KEYS_CLAIM_CODE_EXPIRY_DAYS", cls.claim_code_expiry_days
            ),
            personal_data_days=env.integer("KEYS_PERSONAL_DATA_DAYS", cls.personal_data_days),
            critical_percent=env.number("KEYS_CRITICAL_PERCENT", cls.critical_percent),
            critical_sticky=env.flag("KEYS_CRITICAL_STICKY", cls.critical_sticky),
            low_stock_alerts=env.counts("KEYS_LOW_STOCK_ALERTS", cls.low_stock_alerts),
            sign_in_link_minutes=env.integer("KEYS_SIGN_IN_LINK_MINUTES", 15),
            staff_enrolment_hours=env.integer(
                "KEYS_STAFF_ENROLMENT_HOURS", cls.staff_enrolment_hours
            ),
            staff_session_idle_minutes=env.integer(
                "KEYS_STAFF_SESSION_IDLE_MINUTES", cls.staff_session_idle_minutes
            ),
            staff_session_hours=env.integer("KEYS_STAFF_SESSION_HOURS", cls.staff_session_hours),
            maintainer_session_idle_days=env.integer(
                "KEYS_MAINTAINER_SESSION_IDLE_DAYS", cls.maintainer_session_idle_days
            ),
            maintainer_session_days=env.integer(
                "KEYS_MAINTAINER_SESSION_DAYS", cls.maintainer_session_days
            ),
            max_request_bytes=env.integer("KEYS_MAX_REQUEST_BYTES", cls.max_request_bytes),
            max_upload_bytes=env.integer("KEYS_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            label_layout=env.text("KEYS_LABEL_LAYOUT", cls.label_layout).lower(),
            return_address=env.lines("KEYS_RETURN_ADDRESS", cls.return_address),
            origin_country=env.country("KEYS_ORIGIN_COUNTRY", cls.origin_country),
            customs_goods_origin=env.country("KEYS_CUSTOMS_GOODS_ORIGIN", ""),
            customs_category=env.choice(
                "KEYS_CUSTOMS_CATEGORY", cls.customs_category, CN22_CATEGORIES
            ),
            customs_description=env.text("KEYS_CUSTOMS_DESCRIPTION", cls.customs_description),
            customs_weight_grams=env.integer("KEYS_CUSTOMS_WEIGHT_GRAMS", cls.customs_weight_grams),
            customs_value=env.text("KEYS_CUSTOMS_VALUE", cls.customs_value),
            customs_currency=env.text("KEYS_CUSTOMS_CURRENCY", cls.customs_currency).upper(),
            hs_code=env.text("KEYS_HS_CODE", cls.hs_code),
            carrier_tracking_urls=env.carriers("KEYS_CARRIER_TRACKING", cls.carrier_tracking_urls),
        )
        settings.validate()
        return settings


def get_settings() -> Settings:
    """The settings of the current app."""
    settings: Settings = current_app.extensions["keys_settings"]
    return settings


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# The storages flask-limiter (through `limits`) counts in; only memory:// is not shared.
_RATELIMIT_SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+sentinel",
    "redis+cluster",
    "valkey",
    "valkeys",
    "memcached",
    "mongodb",
    "mongodb+srv",
)


_TASK_QUEUE_SCHEMES = ("sqlite", "redis", "memory", "immediate")


def _validate_task_queue(url: str) -> None:
    scheme, _, rest = url.partition("://")
    if scheme not in _TASK_QUEUE_SCHEMES or (scheme in ("sqlite", "redis") and not rest):
        raise SettingsError(
            "KEYS_TASK_QUEUE_URL must be sqlite:///path/to/tasks.sqlite3 (one machine) or "
            "redis://127.0.0.1:6379/1 (several)"
        )


def _validate_ratelimit_storage(url: str, *, development: bool) -> None:
    if not url and not development:
        raise SettingsError(
            "KEYS_RATELIMIT_STORAGE_URL is required outside development: every worker must "
            "count attempts in one shared storage, such as redis://127.0.0.1:6379/0"
        )
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in _RATELIMIT_SCHEMES:
        raise SettingsError(
            "KEYS_RATELIMIT_STORAGE_URL must be a rate-limit storage URL such as "
            "redis://127.0.0.1:6379/0"
        )
    if scheme == "memory" and not development:
        raise SettingsError(
            "KEYS_RATELIMIT_STORAGE_URL=memory:// keeps rate-limit counters inside each "
            "worker process, so every worker would allow the full number of attempts; outside "
            "development use a shared storage such as redis://127.0.0.1:6379/0"
        )


def _require_real_secret(secret_key: str) -> None:
    if not secret_key:
        raise SettingsError(
            "KEYS_SECRET_KEY is required outside development: "
            'generate one with python -c "import secrets; print(secrets.token_urlsafe(48))"'
        )
    lowered = secret_key.lower()
    if (
        len(secret_key) < _MIN_SECRET_LENGTH
        or len(set(secret_key)) < _MIN_DISTINCT_CHARACTERS
        or any(word in lowered for word in _PLACEHOLDER_WORDS)
    ):
        raise SettingsError(
            f"KEYS_SECRET_KEY looks like a placeholder: use at least {_MIN_SECRET_LENGTH} "
            "random characters"
        )


class _Reader:
    """Parses typed values out of the environment, naming the variable on error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        return self._environ.get(name, default).strip()

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of ``choices`` whatever its case ("gift" is "Gift"); anything else as given,
        for validation to refuse by name."""
        value = self.text(name, default)
        return next((choice for choice in choices if choice.lower() == value.lower()), value)

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be 1 or 0, not {raw!r}")

    def integer(self, name: str, default: int) -> int:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None

    def counts(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """Positive whole numbers separated by commas, highest first; empty for none."""
        raw = self._environ.get(name)
        if raw is None:
            return default
        items = [item.strip() for item in raw.split(",") if item.strip()]
        if not all(item.isdigit() and int(item) > 0 for item in items):
            raise SettingsError(f"{name} must be positive whole numbers like 400,100, not {raw!r}")
        return tuple(sorted({int(item) for item in items}, reverse=True))

    def number(self, name: str, default: float) -> float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, not {raw!r}") from None

    def instant(self, name: str, default: datetime) -> datetime:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an ISO date or date-time, not {raw!r}") from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def lines(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Lines separated by ``|`` ("Name|Street 1|10115 Berlin|GERMANY")."""
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        return tuple(line.strip() for line in raw.split("|"))

    def carriers(
        self, name: str, default: tuple[tuple[str, str], ...]
    ) -> tuple[tuple[str, str], ...]:
        """``Carrier=https://…{tracking}`` pairs separated by ``|``."""
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        pairs = []
        for item in raw.split("|"):
            carrier, _, url = item.partition("=")
            if not carrier.strip() or "{tracking}" not in url or not url.startswith("https://"):
                raise SettingsError(
                    f"{name} must be Carrier=https://…{{tracking}} pairs separated by |"
                )
            pairs.append((carrier.strip(), url.strip()))
        return tuple(pairs)

    def country(self, name: str, default: str) -> str:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        codes = self.countries(name, ())
        if len(codes) != 1:
            raise SettingsError(f"{name} must name one country, not {raw!r}")
        return codes[0]

    def countries(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        import pycountry  # imported here: only needed when the list is overridden

        codes = []
        for item in raw.replace(";", ",").split(","):
            code = item.strip().upper()
            if not code:
                continue
            code = "GB" if code == "UK" else code
            if pycountry.countries.get(alpha_2=code) is None:
                raise SettingsError(f"{name} names an unknown country code {item.strip()!r}")
            if code not in codes:
                codes.append(code)
        return tuple(codes)
