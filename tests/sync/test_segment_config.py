"""The Segment settings: the documented example, secrets, and one-line errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.errors import ConfigError
from sync.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def example_with_segment(tmp_path: Path) -> Path:
    """config.example.toml with its optional Segment settings uncommented."""
    text = (ROOT / "config.example.toml").read_text()
    path = tmp_path / "config.toml"
    path.write_text(re.sub(r"^#(?=[\[a-z])", "", text, flags=re.MULTILINE))
    return path


def test_the_documented_segment_settings_are_valid(tmp_path):
    config = example_with_segment(tmp_path)
    (tmp_path / "secrets.toml").write_text('[segment]\nwrite_key = "wk-3c2b1a"\n')
    settings = load_settings(config, environ={"LEADSCORE_SEGMENT__PROFILE_API_TOKEN": "tok-9f8e7d"})
    segment = settings.segment
    assert segment is not None and segment.tracking_url == "https://api.segment.io"
    assert segment.identity.external_ids == {"salesforce_id": "Id"}
    assert [e.kind for e in segment.exports] == ["tracks", "id_graph"]
    assert segment.write_key.get_secret_value() == "wk-3c2b1a"
    assert segment.profile_api_token.get_secret_value() == "tok-9f8e7d"
    assert "tok-9f8e7d" not in repr(settings) and "wk-3c2b1a" not in str(settings.model_dump())
    assert [t.name for t in settings.traits] == [
        "emails_clicked_30d",
        "product_added_90d",
        "order_value_total",
    ]
    assert settings.predictions[0].segment.traits == {"score": "lead_score", "tier": "lead_tier"}


def test_a_segment_secret_alone_does_not_switch_segment_on():
    settings = load_settings(
        ROOT / "config.example.toml", environ={"LEADSCORE_SEGMENT__WRITE_KEY": "wk"}
    )
    assert settings.segment is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace('score = "lead_score"', 'scroe = "lead_score"'),
            "predictions[0].segment.traits.scroe",
        ),
        (
            lambda t: t.replace('name = "product_added_90d"', 'name = "emails_clicked_30d"'),
            "trait names must be unique; repeated: emails_clicked_30d",
        ),
        (
            lambda t: t.replace('aggregate = "sum"\nproperty = "revenue"', 'aggregate = "sum"'),
            "traits[2]: trait 'order_value_total': aggregate = 'sum' needs a property",
        ),
        (
            lambda t: t.replace(
                "features = { windows_days = [7, 30, 90] }",
                'features = { windows_days = [7, 30, 90], traits = ["emails_clicked_3d"] }',
            ),
            "predictions[0].features.traits: no [[traits]] entry named 'emails_clicked_3d' "
            "(did you mean 'emails_clicked_30d'?)",
        ),
        (
            lambda t: t.replace("[segment]\n", "[segmnt]\n", 1),
            "segmnt: unknown key (did you mean 'segment'?)",
        ),
        (
            lambda t: t.replace('kind = "tracks"', 'kind = "pages"'),
            "segment.exports[0].kind",
        ),
        (
            lambda t: (
                t.replace('#ca_bundle = ""', 'write_key = "in the config"')
                if "#ca_bundle" in t
                else t.replace('ca_bundle = ""', 'write_key = "in the config"')
            ),
            "segment.write_key: secrets must not be in the config file",
        ),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_key(tmp_path, edit, message):
    config = example_with_segment(tmp_path)
    config.write_text(edit(config.read_text()))
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_writing_to_segment_needs_the_segment_section(tmp_path):
    config = example_with_segment(tmp_path)
    text = config.read_text()
    config.write_text(text[: text.index("# -- Segment (optional")])
    with pytest.raises(ConfigError, match=r"predictions\[0\].segment writes to Segment"):
        load_settings(config, environ={})


def test_a_malformed_secret_is_reported_without_its_value(tmp_path):
    config = example_with_segment(tmp_path)
    (tmp_path / "secrets.toml").write_text("[segment]\nwrite_key = 987654321\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert "segment.write_key" in str(info.value) and "987654321" not in str(info.value)
