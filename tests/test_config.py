"""Settings as a user configures them: keyword over TRACKGATE_* environment over default, clear errors with
secrets masked, and ``trackgate check-config`` as a subprocess."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trackgate
from trackgate import settings as settings_module


def test_keyword_beats_environment_beats_default() -> None:
    env = {"TRACKGATE_COOKIE_NAME": "from_env", "TRACKGATE_VISITOR_PARAM": "vp"}
    settings = trackgate.Settings.from_environ(env, cookie_name="from_kw")
    assert settings.cookie_name == "from_kw"
    assert settings.visitor_param == "vp"
    assert settings.path_prefix == "/_tg"


def test_plain_constructor_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKGATE_CONSENT", "required")
    assert trackgate.Settings().consent == "required"
    assert trackgate.Settings(consent="implicit").consent == "implicit"


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="cookie_nmae"):
        trackgate.Settings.from_environ({}, cookie_nmae="x")


def test_unparseable_value_names_variable_and_value() -> None:
    with pytest.raises(trackgate.ConfigError) as info:
        trackgate.Settings.from_environ({"TRACKGATE_COOKIE_MAX_AGE": "soon"})
    assert info.value.name == "TRACKGATE_COOKIE_MAX_AGE"
    assert info.value.value == "soon"
    assert "TRACKGATE_COOKIE_MAX_AGE" in str(info.value) and "soon" in str(info.value)


def test_secret_values_are_masked_in_errors() -> None:
    with pytest.raises(trackgate.ConfigError) as info:
        trackgate.Settings.from_environ({}, webhook_secret=b"hunter2")
    assert "hunter2" not in str(info.value)
    assert "****" in str(info.value)


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "on", " On "])
def test_true_words(word: str) -> None:
    assert trackgate.Settings.from_environ({"TRACKGATE_SPOOL_SYNC": word}).spool_sync is True


@pytest.mark.parametrize("word", ["false", "0", "no", "off", "OFF"])
def test_false_words(word: str) -> None:
    assert trackgate.Settings.from_environ({"TRACKGATE_COOKIE_HTTPONLY": word}).cookie_httponly is False


@pytest.mark.parametrize("word", ["", "y", "2", "enabled", "truee", "nope"])
def test_other_boolean_words_are_rejected(word: str) -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_RESPECT_GPC"):
        trackgate.Settings.from_environ({"TRACKGATE_RESPECT_GPC": word})


@pytest.mark.parametrize(("text", "seconds"), [("390d", 390 * 86400), ("90m", 5400), ("3600", 3600), ("2w", 1209600)])
def test_durations(text: str, seconds: int) -> None:
    assert trackgate.Settings.from_environ({"TRACKGATE_COOKIE_MAX_AGE": text}).cookie_max_age == seconds


@pytest.mark.parametrize("text", ["", "-5", "3x", "1.5d", "d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_COOKIE_MAX_AGE"):
        trackgate.Settings.from_environ({"TRACKGATE_COOKIE_MAX_AGE": text})


@pytest.mark.parametrize("prefix", ["", "/", "_tg", "/_tg/", "/a b", "/t?x", "/t#x", "//tg", "/t%20g"])
def test_bad_path_prefixes(prefix: str) -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_PATH_PREFIX"):
        trackgate.Settings.from_environ({"TRACKGATE_PATH_PREFIX": prefix})


@pytest.mark.parametrize("prefix", ["/_tg", "/track", "/static/t.v1", "/a/b~c"])
def test_path_prefixes(prefix: str) -> None:
    assert trackgate.Settings.from_environ({"TRACKGATE_PATH_PREFIX": prefix}).path_prefix == prefix


@pytest.mark.parametrize("domain", ["example.org", ".example.org", "localhost", "bücher.example"])
def test_cookie_domains_any_script(domain: str) -> None:
    assert trackgate.Settings.from_environ({"TRACKGATE_COOKIE_DOMAIN": domain}).cookie_domain == domain


def test_production_requires_a_secret_key() -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_SECRET_KEY"):
        trackgate.Settings.from_environ({"TRACKGATE_ENV": "production"})
    ok = trackgate.Settings.from_environ({"TRACKGATE_ENV": "production", "TRACKGATE_SECRET_KEY": "new,old"})
    assert ok.signing_keys == ("new", "old")


def test_missing_key_warns_once_and_still_signs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings_module, "_warned", False)
    caplog.set_level(logging.WARNING, logger="trackgate")
    first = trackgate.Settings.from_environ({})
    second = trackgate.Settings.from_environ({})
    keys = first.signing_keys
    assert second.signing_keys == keys  # one per-process key, shared
    assert keys and all(keys)
    warnings = [r for r in caplog.records if "TRACKGATE_SECRET_KEY" in r.getMessage()]
    assert len(warnings) == 1


def test_replace_changes_only_the_given_fields() -> None:
    base = trackgate.Settings.from_environ({"TRACKGATE_COOKIE_NAME": "vid", "TRACKGATE_SECRET_KEY": "k"})
    changed = base.replace(consent="required", cookie_max_age="90m")
    assert (changed.consent, changed.cookie_max_age) == ("required", 5400)
    assert (changed.cookie_name, changed.secret_key) == ("vid", ("k",))
    assert base.consent == "implicit"
    with pytest.raises(TypeError, match="nope"):
        base.replace(nope=1)


def test_describe_and_repr_mask_secrets() -> None:
    settings = trackgate.Settings.from_environ(
        {"TRACKGATE_WEBHOOK_SECRET": "hunter2", "TRACKGATE_SECRET_KEY": "k1,k2", "TRACKGATE_COOKIE_NAME": "vid"}
    )
    shown = settings.describe()
    assert shown["TRACKGATE_WEBHOOK_SECRET"] == "****"
    assert shown["TRACKGATE_SECRET_KEY"] == "****"
    assert shown["TRACKGATE_COOKIE_NAME"] == "vid"
    assert "hunter2" not in repr(settings) and "k1" not in repr(settings)


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")} | env
    return subprocess.run(
        [sys.executable, "-m", "trackgate.cli", "check-config"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_prints_masked_settings() -> None:
    result = _check_config({"TRACKGATE_WEBHOOK_SECRET": "hunter2", "TRACKGATE_COOKIE_NAME": "vid"})
    assert result.returncode == 0, result.stderr
    assert "TRACKGATE_WEBHOOK_SECRET=****" in result.stdout.splitlines()
    assert "TRACKGATE_COOKIE_NAME=vid" in result.stdout.splitlines()
    assert "hunter2" not in result.stdout + result.stderr


def test_check_config_reports_a_bad_value() -> None:
    result = _check_config({"TRACKGATE_COOKIE_SECURE": "perhaps"})
    assert result.returncode == 1
    assert "TRACKGATE_COOKIE_SECURE" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TRACKGATE_SINKS": "kissmetrix"}, "TRACKGATE_SINKS"),
        ({"TRACKGATE_SINKS": "webhook"}, "TRACKGATE_WEBHOOK_URL"),
        ({"TRACKGATE_SINKS": "webhook", "TRACKGATE_WEBHOOK_URL": "ftp://x"}, "TRACKGATE_WEBHOOK_URL"),
        ({"TRACKGATE_SINKS": "matomo"}, "TRACKGATE_MATOMO_URL"),
        ({"TRACKGATE_STORE_URL": "mysql://x"}, "TRACKGATE_STORE_URL"),
        ({"TRACKGATE_ENV": "Production"}, "TRACKGATE_SECRET_KEY"),  # any case
        # (read at the first tracking link: every tracking request would have failed)
        ({"TRACKGATE_LEGACY_PYTRACKING": "true", "TRACKGATE_LEGACY_PYTRACKING_KEY": "short"}, "LEGACY_PYTRACKING_KEY"),
    ],
    ids=[
        "unknown-sink", "webhook-without-url", "webhook-not-http", "matomo-without-url", "store-scheme", "env-case",
        "legacy-key",
    ],
)
def test_check_config_reports_what_would_fail_at_the_first_event(env: dict[str, str], variable: str) -> None:
    result = _check_config(env)
    assert result.returncode == 1
    assert variable in result.stderr and "Traceback" not in result.stderr


def test_check_config_masks_credentials_in_urls() -> None:
    result = _check_config({"TRACKGATE_SINKS": "webhook", "TRACKGATE_WEBHOOK_URL": "https://u:pw@h.example/in?token=abc"})
    assert result.returncode == 0, result.stderr
    assert "TRACKGATE_WEBHOOK_URL=https://u:****@h.example/in?token=****" in result.stdout.splitlines()
    assert "pw@" not in result.stdout and "abc" not in result.stdout


@pytest.mark.parametrize("keyword", ["webhook_secret", "cookie_name", "base_url"])
def test_a_number_is_not_taken_for_text(keyword: str) -> None:
    with pytest.raises(trackgate.ConfigError) as raised:
        trackgate.Settings.from_environ({}, **{keyword: 123})
    assert raised.value.name == keyword


@pytest.mark.parametrize("variable", ["TRACKGATE_LEGACY_PYTRACKING_KEY", "TRACKGATE_ENCRYPTION_KEY"])
def test_a_key_that_needs_cryptography_fails_at_start_up_without_it(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    import importlib.util

    from cryptography.fernet import Fernet

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cryptography" else real_find_spec(name, *a)
    )
    keyword = variable.removeprefix("TRACKGATE_").lower()
    with pytest.raises(trackgate.ConfigError, match=f"{variable}.*cryptography extra"):
        trackgate.WSGIMiddleware(lambda environ, start: [], **{keyword: Fernet.generate_key().decode()})


@pytest.mark.parametrize("key", ["short", "not base64 at all!!", "A" * 44])
def test_a_bad_legacy_fernet_key_fails_at_start_up(key: str) -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_LEGACY_PYTRACKING_KEY"):
        trackgate.ASGIMiddleware(lambda scope, receive, send: None, legacy_pytracking=True, legacy_pytracking_key=key)


@pytest.mark.parametrize("value", ["https://shop.example ", "https://shop.example\n", " https://shop.example/"])
def test_whitespace_around_a_base_url_is_dropped(value: str) -> None:
    # A .env file's trailing space or a mounted secret's newline would have gone into every link.
    settings = trackgate.Settings.from_environ({"TRACKGATE_BASE_URL": value})
    assert settings.base_url in ("https://shop.example", "https://shop.example/")
    links = trackgate.TrackingLinks(settings.replace(secret_key="k"))
    assert links.click_url("https://partner.example/").startswith("https://shop.example/_tg/c/")


@pytest.mark.parametrize("value", ["https://shop .example", "https://shop.example/a b", "https://shop.example/\tx"])
def test_whitespace_inside_a_base_url_is_refused(value: str) -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_BASE_URL"):
        trackgate.Settings.from_environ({"TRACKGATE_BASE_URL": value})


def test_a_cookie_domain_no_cookie_could_carry_fails_at_start_up() -> None:
    # A label over 63 characters: every Set-Cookie would have failed, silently, for every visitor.
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_COOKIE_DOMAIN"):
        trackgate.Settings.from_environ({"TRACKGATE_COOKIE_DOMAIN": "a" * 64 + ".example.org"})
    assert _check_config({"TRACKGATE_COOKIE_DOMAIN": "a" * 64 + ".example.org"}).returncode == 1


def test_path_objects_are_settings_as_django_and_flask_settings_write_them(tmp_path: Path) -> None:
    settings = trackgate.Settings(spool_path=tmp_path / "spool.sqlite3")  # BASE_DIR / "spool.sqlite3"
    assert settings.spool_path == str(tmp_path / "spool.sqlite3")


def test_check_config_masks_a_token_given_as_the_user_name() -> None:
    result = _check_config({"TRACKGATE_SINKS": "webhook", "TRACKGATE_WEBHOOK_URL": "https://s3cr3t@h.example/in"})
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "TRACKGATE_WEBHOOK_URL=https://****@h.example/in" in result.stdout.splitlines()


def test_a_postgresql_store_without_psycopg_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # It failed in the worker instead, for every retry of every event, while check-config said all was well.
    import importlib.util

    from trackgate.dispatch.registry import create_sinks

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a)
    )
    with pytest.raises(trackgate.ConfigError, match=r"TRACKGATE_STORE_URL.*psycopg"):
        create_sinks(trackgate.Settings(store_url="postgresql://u:pw@127.0.0.1:1/db"))


def test_check_config_shows_what_unset_variables_mean(tmp_path: Path) -> None:
    result = _check_config({"TRACKGATE_SINKS": "store", "XDG_CACHE_HOME": str(tmp_path / "c"),
                            "XDG_DATA_HOME": str(tmp_path / "d")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "TRACKGATE_COOKIE_SECURE=auto" in lines
    [spool] = [line for line in lines if line.startswith("TRACKGATE_SPOOL_PATH=")]
    assert spool.startswith(f"TRACKGATE_SPOOL_PATH={tmp_path / 'c'}")  # where a user finds the waiting events
    assert f"TRACKGATE_STORE_URL=sqlite:///{tmp_path / 'd'}/trackgate/events.sqlite3" in lines


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    # `trackgate check-config | head -1`
    process = subprocess.Popen(
        [sys.executable, "-m", "trackgate.cli", "check-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    error = process.stderr.read().decode()
    process.wait(60)
    process.stderr.close()
    assert "Traceback" not in error and "BrokenPipeError" not in error
