"""Settings come from KEYS_* variables, once, and refuse unsafe values with a clear message."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from core.settings import DEFAULT_COUNTRIES, Settings, SettingsError

REAL_SECRET = "kR7-vQ2xLp9mZt4WbN8sJd3FhY6cUe1AaGo5"
PRODUCTION = {
    "KEYS_SECRET_KEY": REAL_SECRET,
    "KEYS_BASE_URL": "https://keys.example.net",
    "KEYS_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
}


def test_production_reads_every_value():
    settings = Settings.from_env(
        {
            **PRODUCTION,
            "KEYS_DATABASE_URL": "postgresql+psycopg://keys@db/keys",
            "KEYS_COUNTRIES": "de, uk ,US",
            "KEYS_KEYS_PER_MAINTAINER": "1",
            "KEYS_PROGRAMME_OPENS": "2027-01-01",
            "KEYS_PROGRAMME_CLOSES": "2027-06-30T12:00:00+02:00",
            "KEYS_SMTP_STARTTLS": "yes",
            "KEYS_PROXY_HOPS": "1",
            "KEYS_LOW_STOCK_ALERTS": "50, 500,50",
            "KEYS_PERSONAL_DATA_DAYS": "90",
        }
    )
    assert settings.environment == "production"
    assert settings.countries == ("DE", "GB", "US")
    assert settings.keys_per_maintainer == 1
    assert settings.programme_opens_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert settings.programme_closes_at == datetime(2027, 6, 30, 10, tzinfo=UTC)
    assert settings.smtp_starttls is True
    assert settings.proxy_hops == 1
    assert settings.ratelimit_storage_url == "redis://127.0.0.1:6379/0"
    assert settings.low_stock_alerts == (500, 50)
    assert settings.personal_data_days == 90
    assert settings.rp_id == "keys.example.net"
    assert settings.https


def test_defaults_are_the_programme_rules():
    settings = Settings.from_env(PRODUCTION)
    assert settings.countries == DEFAULT_COUNTRIES
    assert "GB" in settings.countries and "UK" not in settings.countries
    assert settings.keys_per_maintainer == 2
    assert settings.claim_code_expiry_days == 30
    assert settings.critical_percent == 1.0
    assert settings.personal_data_days == 30


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "KEYS_SECRET_KEY is required"),
        ("", "KEYS_SECRET_KEY is required"),
        ("you-will-never-guess", "placeholder"),
        ("change-me-change-me-change-me-change-me", "placeholder"),
        ("short", "placeholder"),
        ("a" * 64, "placeholder"),
    ],
)
def test_production_refuses_missing_or_placeholder_secrets(secret, message):
    env = dict(PRODUCTION)
    env.pop("KEYS_SECRET_KEY")
    if secret is not None:
        env["KEYS_SECRET_KEY"] = secret
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_development_generates_a_secret_per_process():
    first = Settings.from_env({"KEYS_ENV": "development"})
    second = Settings.from_env({"KEYS_ENV": "development"})
    assert len(first.secret_key) >= 32
    assert first.secret_key != second.secret_key
    assert first.base_url == "http://localhost:5000"
    assert first.ratelimit_storage_url == "memory://"  # one process on a laptop
    assert first.proxy_hops == 0


def test_secret_is_not_in_the_repr():
    assert REAL_SECRET not in repr(Settings.from_env(PRODUCTION))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEYS_BASE_URL": ""}, "KEYS_BASE_URL is required"),
        ({"KEYS_BASE_URL": "http://keys.example.net"}, "must use https"),
        ({"KEYS_BASE_URL": "https://keys.example.net/app"}, "without a path"),
        ({"KEYS_KEYS_PER_MAINTAINER": "two"}, "KEYS_KEYS_PER_MAINTAINER must be a whole number"),
        ({"KEYS_KEYS_PER_MAINTAINER": "0"}, "between 1 and 10"),
        ({"KEYS_COUNTRIES": "DE,XX"}, "unknown country code 'XX'"),
        ({"KEYS_PROGRAMME_OPENS": "next week"}, "KEYS_PROGRAMME_OPENS must be an ISO date"),
        ({"KEYS_PROGRAMME_OPENS": "2030-01-01"}, "must be after"),
        ({"KEYS_DEMO_MODE": "maybe"}, "KEYS_DEMO_MODE must be 1 or 0"),
        ({"KEYS_ENV": "staging"}, "KEYS_ENV must be one of"),
        ({"KEYS_MAIL_BACKEND": "outbox"}, "outbox keeps mail in the database for anyone"),
        ({"KEYS_DEMO_MODE": "1"}, "KEYS_DEMO_MODE=1 shows every sign-in link"),
        ({"KEYS_CRITICAL_PERCENT": "0"}, "KEYS_CRITICAL_PERCENT"),
        ({"KEYS_RATELIMIT_STORAGE_URL": ""}, "KEYS_RATELIMIT_STORAGE_URL is required"),
        ({"KEYS_RATELIMIT_STORAGE_URL": "memory://"}, "inside each worker process"),
        ({"KEYS_RATELIMIT_STORAGE_URL": "127.0.0.1:6379"}, "a rate-limit storage URL"),
        ({"KEYS_RATELIMIT_STORAGE_URL": "postgresql://db/keys"}, "a rate-limit storage URL"),
        ({"KEYS_SMTP_TIMEOUT_SECONDS": "0"}, "KEYS_SMTP_TIMEOUT_SECONDS must be above 0"),
        ({"KEYS_STAFF_ENROLMENT_HOURS": "0"}, "KEYS_STAFF_ENROLMENT_HOURS must be between 1"),
        ({"KEYS_TASK_QUEUE_URL": "amqp://rabbit"}, "KEYS_TASK_QUEUE_URL must be sqlite"),
        ({"KEYS_TASK_CHECK_IN_SECONDS": "0"}, "KEYS_TASK_CHECK_IN_SECONDS must be between"),
        ({"KEYS_TASK_CONSUMER_SILENCE_SECONDS": "10"}, "at least six check-ins"),
        (
            {"KEYS_BACKUP_DIRECTORY": "/var/backups/keys", "KEYS_DATABASE_URL": "postgresql://x/k"},
            "KEYS_BACKUP_DIRECTORY copies an SQLite database",
        ),
        ({"KEYS_PROXY_HOPS": "-1"}, "KEYS_PROXY_HOPS must be between 0"),
        ({"KEYS_PROXY_HOPS": "one"}, "KEYS_PROXY_HOPS must be a whole number"),
        ({"KEYS_LOW_STOCK_ALERTS": "400,-1"}, "KEYS_LOW_STOCK_ALERTS must be positive"),
        ({"KEYS_PERSONAL_DATA_DAYS": "0"}, "KEYS_PERSONAL_DATA_DAYS must be between 1 and"),
        ({"KEYS_PERSONAL_DATA_DAYS": "a month"}, "KEYS_PERSONAL_DATA_DAYS must be a whole"),
        ({"KEYS_CARRIER_TRACKING": "DHL=http://dhl.example/{tracking}"}, "Carrier=https://"),
        ({"KEYS_CARRIER_TRACKING": "DHL=https://dhl.example/"}, "Carrier=https://"),
        ({"KEYS_CARRIER_TRACKING": "=https://dhl.example/{tracking}"}, "Carrier=https://"),
        (
            {"KEYS_CARRIER_TRACKING": "DHL=https://a/{tracking}|dhl=https://b/{tracking}"},
            "KEYS_CARRIER_TRACKING names the carrier 'dhl' twice",
        ),
        (
            {"KEYS_CARRIER_TRACKING": "D" * 41 + "=https://a.example/{tracking}"},
            "KEYS_CARRIER_TRACKING: a carrier's name has 1 to 40 characters",
        ),
    ],
)
def test_malformed_values_are_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**PRODUCTION, **env})


def test_carriers_and_their_tracking_pages_are_read_and_named_in_any_case():
    settings = Settings.from_env(
        {
            **PRODUCTION,
            "KEYS_CARRIER_TRACKING": (
                "La Poste=https://www.laposte.fr/outils/suivre-vos-envois?code={tracking} | "
                "DHL=https://dhl.example/track?id={tracking}&lang=en"
            ),
        }
    )

    assert settings.carriers == ("La Poste", "DHL")
    assert settings.carrier_named(" la POSTE ") == "La Poste"
    assert settings.carrier_named("UPS") == ""
    assert (
        settings.tracking_url("dhl", "00 34/5")
        == "https://dhl.example/track?id=00%2034%2F5&lang=en"
    )
    assert settings.tracking_url("UPS", "1Z") == ""
    assert Settings.from_env(PRODUCTION).carriers == ("DHL", "UPS", "FedEx")


def test_settings_made_in_code_are_checked_for_carriers_too():
    settings = Settings.from_env(PRODUCTION)
    with pytest.raises(SettingsError, match="must name at least one carrier"):
        settings.replace(carrier_tracking_urls=())
    with pytest.raises(SettingsError, match="tracking page of DHL must be an https:// URL"):
        settings.replace(carrier_tracking_urls=(("DHL", "https://dhl.example/"),))


def test_loopback_http_is_allowed_for_local_production_runs():
    settings = Settings.from_env({**PRODUCTION, "KEYS_BASE_URL": "http://localhost:8000"})
    assert not settings.https


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "https://[::1]", "https://192.0.2.7"])
def test_an_ip_address_is_refused_because_browsers_refuse_security_keys_there(url):
    with pytest.raises(SettingsError, match="not an IP address"):
        Settings.from_env({**PRODUCTION, "KEYS_BASE_URL": url})


def test_the_app_refuses_to_start_without_a_secret(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "routes"],
        env={"PATH": "/usr/bin:/bin", "KEYS_INSTANCE_PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Security Key Giveaway cannot start: KEYS_SECRET_KEY is required" in result.stderr


def test_the_app_refuses_to_start_in_demo_mode_in_production(tmp_path):
    """Demo mode shows every sign-in link and claim code at /dev/outbox: never in production."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "routes"],
        env={**PRODUCTION, "PATH": "/usr/bin:/bin", "KEYS_INSTANCE_PATH": str(tmp_path)}
        | {"KEYS_DEMO_MODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "cannot start: KEYS_DEMO_MODE=1 shows every sign-in link" in result.stderr
    assert "/dev/outbox" not in result.stdout  # no routes were listed
