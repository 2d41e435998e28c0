"""The REST API versions the sandbox serves, as ``GET /services/data/`` lists them.

Real orgs serve every version from v31.0 (Summer '14; older ones were retired in 2025) up to the
current release, and clients pin very different ones: simple-salesforce 1.12.10 uses 59.0,
tap-salesforce 61.0, Airbyte 57.0 (``shared/docs/api-contracts-realorg.md`` section 7.1). The
documentation's version pickers list Summer '26 (67.0) as generally available and its Bulk API
samples already use 68.0 (Winter '27), so the sandbox serves 31.0 to 68.0.

A release label follows the three releases a year: v20.0 was Winter '11, v21.0 Spring '11,
v22.0 Summer '11, and so on (``/services/data`` answers ``{"label": "Winter '24", "url":
"/services/data/v59.0", "version": "59.0"}``,
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_versions.htm).
"""

from __future__ import annotations

OLDEST_VERSION = 31
NEWEST_VERSION = 68
SUPPORTED_VERSIONS: tuple[str, ...] = tuple(
    f"{major}.0" for major in range(OLDEST_VERSION, NEWEST_VERSION + 1)
)
"""Every served version, oldest first (``"31.0"`` ... ``"68.0"``)."""
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
_SEASONS = ("Winter", "Spring", "Summer")


def release_label(version: str) -> str:
    """Name the Salesforce release of an API version (``"59.0"`` -> ``"Winter '24"``).

    Args:
        version: A version such as ``"59.0"``.

    Returns:
        The release label.
    """
    releases_since_winter_11 = int(float(version)) - 20
    season = _SEASONS[releases_since_winter_11 % 3]
    year = 11 + releases_since_winter_11 // 3
    return f"{season} '{year:02d}"


def version_list() -> list[dict[str, str]]:
    """Return the body of ``GET /services/data/``: one entry per served version, oldest first.

    Returns:
        ``[{"label", "url", "version"}, ...]``.
    """
    return [
        {"label": release_label(version), "url": f"/services/data/v{version}", "version": version}
        for version in SUPPORTED_VERSIONS
    ]
