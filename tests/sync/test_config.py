"""Loading config.toml + secrets into validated settings, and the one-line errors for bad config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.errors import ConfigError
from sync.config import load_settings

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[salesforce]
login_url = "https://login.salesforce.com"
[salesforce.streams.Lead]
fields = ["Industry"]
[[predictions]]
name = "lead_conversion"
label = { event = "converted", within_days = 30 }
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_example_config_is_valid():
    settings = load_settings(ROOT / "config.example.toml", environ={})
    assert settings.predictions[0].name == "lead_conversion"
    assert settings.salesforce.streams["Lead"].cursor_field == "SystemModstamp"
    assert settings.store.path == ROOT / "leadscore.duckdb"  # relative to the config file


def test_default_store_paths_are_relative_to_the_config_file(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    assert settings.store.path == tmp_path / "leadscore.duckdb"
    assert settings.store.models_dir == tmp_path / "models"


def test_secrets_come_from_secrets_toml_and_env_wins(tmp_path):
    config = write(tmp_path, MINIMAL)
    write(
        tmp_path,
        '[salesforce]\nclient_id = "from-file"\nclient_secret = "s3cret"\n',
        "secrets.toml",
    )
    settings = load_settings(config, environ={"LEADSCORE_SALESFORCE__CLIENT_ID": "from-env"})
    assert settings.salesforce.client_id.get_secret_value() == "from-env"
    assert settings.salesforce.client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_secret_in_the_config_file_is_rejected(tmp_path):
    config = write(tmp_path, MINIMAL.replace("login_url =", 'client_secret = "oops"\nlogin_url ='))
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    message = str(info.value)
    assert "salesforce.client_secret" in message and "secrets.toml" in message
    assert "oops" not in message


def test_non_secret_in_secrets_toml_is_rejected(tmp_path):
    config = write(tmp_path, MINIMAL)
    write(tmp_path, "[salesforce]\npage_size = 500\n", "secrets.toml")
    with pytest.raises(ConfigError, match=r"secrets\.toml: salesforce\.page_size: not a secret"):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace('login_url = "https://login.salesforce.com"', ""),
            None,
        ),  # default login URL is fine
        (
            MINIMAL.replace("[salesforce.streams.Lead]", "[salesforce.streams.Lead]\ncursor = 1"),
            r"salesforce\.streams\.Lead\.cursor: unknown key \(did you mean 'cursor_field'\?\)",
        ),
        (
            MINIMAL.replace("within_days = 30", 'within_days = 30, in = ["yes"]'),
            r"predictions\[0\]\.label\.in: unknown key \(keys here: event, within_days, where, "
            r"aggregate, threshold, comparison, field, positive, classes\)",
        ),
        (
            MINIMAL.replace("within_days = 30", 'within_days = "thirty"'),
            r"predictions\[0\]\.label\.within_days: Input should be a valid integer",
        ),
        (
            MINIMAL.replace('name = "lead_conversion"\n', ""),
            r"predictions\[0\]\.name: required key is missing",
        ),
        (MINIMAL + "\n[store]\npath = 3\n", r"store\.path: must be a path string"),
        (
            MINIMAL.replace("https://login.salesforce.com", "http://insecure"),
            r"salesforce\.login_url: must be an https",
        ),
        (MINIMAL + "\n[unknown]\nx = 1\n", r"unknown: unknown key"),
        (
            MINIMAL + "\n[fresh]\ncdc_window_seconds = -1\n",
            r"fresh\.cdc_window_seconds: Input should be greater than or equal to 0",
        ),
        (
            MINIMAL + '\n[fresh]\ncdc_window_seconds = "2"\n',
            r"fresh\.cdc_window_seconds: must be a number",
        ),
        ("[salesforce\n", r"invalid TOML"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path, text, expected):
    config = write(tmp_path, text)
    if expected is None:
        load_settings(config, environ={})
        return
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    message = str(info.value)
    assert str(config) in message
    assert __import__("re").search(expected, message), message
    assert "\n" not in message


def test_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_settings(tmp_path, environ={})
    if os.geteuid() != 0:  # root reads anything
        path = write(tmp_path, MINIMAL)
        path.chmod(0)
        with pytest.raises(ConfigError, match="cannot read the file"):
            load_settings(path, environ={})


def test_tier_cutoffs_must_be_probabilities(tmp_path):
    config = write(tmp_path, MINIMAL + "[predictions.tiers]\nA = 1.5\n")
    with pytest.raises(ConfigError, match=r"predictions\[0\]\.tiers: .*must be a probability"):
        load_settings(config, environ={})
