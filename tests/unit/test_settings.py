"""Settings: read once from SEMS_*, strict about unknown keys and bad values."""

from pathlib import Path

import pytest

from streams.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_are_the_embedded_runtime() -> None:
    s = load_settings({})
    assert (s.runtime, s.mqtt_url, s.api_port, s.database_path) == (
        "local", None, 8080, Path(".run/data/sems.db"))


def test_environment_is_read_and_flags_override_it() -> None:
    env = {"SEMS_ALLOWED_LATENESS_S": "12.5", "SEMS_API_PORT": "9000", "HOME": "/root"}
    s = load_settings(env, api_port=9100, mqtt_url=None)
    assert s.allowed_lateness_s == 12.5
    assert s.api_port == 9100  # the flag wins; an unset flag (None) does not erase the env


def test_unknown_setting_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="SEMS_ALOWED_LATENESS_S"):
        load_settings({"SEMS_ALOWED_LATENESS_S": "10"})


@pytest.mark.parametrize(("key", "value"), [
    ("SEMS_API_PORT", "http"),  # not a number
    ("SEMS_API_PORT", "70000"),  # out of range
    ("SEMS_RUNTIME", "spark"),  # not a runtime
    ("SEMS_ALLOWED_LATENESS_S", "-1"),  # negative
])
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        load_settings({key: value})


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(ValueError, match="frozen"):
        s.api_port = 1  # type: ignore[misc]
