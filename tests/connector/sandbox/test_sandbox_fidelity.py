"""What outside clients rely on (api-contracts-realorg sections 5 and 7): datetime literals as
their bookmarks write them, every served version, the refresh token flow, composite/batch,
every standard describe key, queryAll paging and Bulk 2.0 query counters."""

from __future__ import annotations

import datetime as dt

import pytest
from simple_salesforce import Salesforce

from connector.sandbox.describe_keys import FIELD_DEFAULTS, SOBJECT_DEFAULTS
from tests.connector.sandbox.conftest import CaSession


@pytest.mark.parametrize(
    "literal",
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.1Z",
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:00.000000Z",  # tap-salesforce bookmarks (singer-python %f)
        "2024-01-01T00:00:00.123456789Z",
        "2024-01-01T00:00:00.000+00:00",  # Airbyte (isoformat, milliseconds)
        "2024-01-01T01:00:00.000000+01:00",
        "2023-12-31T19:00:00-05:00",
        "2023-12-31T19:00:00.5-0500",
    ],
)
def test_datetime_literals_with_0_to_9_fraction_digits_and_offsets(sandbox, sf, literal):
    cutoff = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    expected = sandbox.sql(
        "SELECT count(*) FROM Lead WHERE IsDeleted = 0 AND SystemModstamp >= ?", [cutoff]
    )[0][0]
    answer = sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp >= {literal}")
    # a fraction only moves the cutoff within the first second
    assert (
        abs(answer["totalSize"] - expected)
        <= sandbox.sql(
            "SELECT count(*) FROM Lead WHERE IsDeleted = 0 AND SystemModstamp = ?", [cutoff]
        )[0][0]
    )


def test_datetime_fraction_counts_to_the_millisecond(sandbox, sf):
    stamp = sandbox.sql("SELECT SystemModstamp FROM Lead WHERE IsDeleted = 0 LIMIT 1")[0][0]
    moment = dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    at = sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp >= {moment}.000000Z")
    after = sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp >= {moment}.900000001Z")
    assert at["totalSize"] > after["totalSize"]


def test_ten_fraction_digits_are_malformed(sf):
    from simple_salesforce.exceptions import SalesforceMalformedRequest

    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id FROM Lead WHERE SystemModstamp >= 2024-01-01T00:00:00.1234567890Z")
    assert caught.value.content[0]["errorCode"] == "MALFORMED_QUERY"


def test_versions_31_to_68_are_listed_and_routed(sandbox, session, token_for):
    versions = session.get(f"{sandbox.url}/services/data").json()
    assert [v["version"] for v in versions] == [f"{n}.0" for n in range(31, 69)]
    by_version = {v["version"]: v for v in versions}
    assert by_version["59.0"] == {
        "label": "Winter '24",
        "url": "/services/data/v59.0",
        "version": "59.0",
    }
    assert by_version["67.0"]["label"] == "Summer '26"
    assert by_version["31.0"]["label"] == "Summer '14"
    headers = {"Authorization": f"Bearer {token_for(sandbox, session)}"}
    for version, status in (("31.0", 200), ("57.0", 200), ("61.0", 200), ("68.0", 200)):
        response = session.get(
            f"{sandbox.url}/services/data/v{version}/query",
            params={"q": "SELECT Id FROM User"},
            headers=headers,
        )
        assert response.status_code == status, version
        assert response.json()["records"][0]["attributes"]["url"].startswith(
            f"/services/data/v{version}/"
        )
    for version in ("30.0", "69.0"):
        response = session.get(f"{sandbox.url}/services/data/v{version}/limits", headers=headers)
        assert response.status_code == 404


def refresh(sandbox, session: CaSession, token: str, **overrides: str):
    info = sandbox.info
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        **overrides,
    }
    return session.post(f"{sandbox.url}/services/oauth2/token", data=form)


def test_refresh_token_login_acts_as_the_integration_user(sandbox, session):
    info = sandbox.info
    answer = refresh(sandbox, session, info["refresh_token"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["instance_url"] == sandbox.url and "refresh_token" not in body
    assert body["scope"] == "api refresh_token"
    assert body["id"].endswith("/" + sandbox.credentials.user_id)
    sf = Salesforce(
        instance_url=body["instance_url"], session_id=body["access_token"], session=session
    )
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1
    # the same token works again (no rotation by default)
    assert refresh(sandbox, session, info["refresh_token"]).status_code == 200


def test_refresh_token_errors(sandbox, session):
    info = sandbox.info
    wrong = refresh(sandbox, session, info["refresh_token"] + "x")
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    bad_client = refresh(sandbox, session, info["refresh_token"], client_id="nope")
    assert bad_client.json()["error"] == "invalid_client_id"
    bad_secret = refresh(sandbox, session, info["refresh_token"], client_secret="nope")
    assert bad_secret.json()["error"] == "invalid_client"


def test_refresh_token_rotation_retires_the_old_token(writable, session_for):
    session = session_for(writable)
    tokens = writable._api.refresh_tokens  # white-box: an org with rotation enabled
    tokens.rotate = True
    first = refresh(writable, session, writable.info["refresh_token"]).json()
    assert first["refresh_token"] != writable.info["refresh_token"]
    assert refresh(writable, session, writable.info["refresh_token"]).status_code == 400
    assert refresh(writable, session, first["refresh_token"]).status_code == 200


def test_composite_batch_as_tap_salesforce_discovers(sandbox, sf, session):
    body = {
        "haltOnError": True,
        "batchRequests": [
            {"method": "GET", "url": "/services/data/v61.0/sobjects/Lead/describe"},
            {"method": "GET", "url": "v34.0/sobjects/Contact/describe"},
            {"method": "GET", "url": "v61.0/query?q=SELECT+Id+FROM+User+LIMIT+2"},
        ],
    }
    headers = {"Authorization": f"Bearer {sf.session_id}"}
    response = session.post(
        f"{sandbox.url}/services/data/v61.0/composite/batch", json=body, headers=headers
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["hasErrors"] is False and len(answer["results"]) == 3
    assert [r["statusCode"] for r in answer["results"]] == [200, 200, 200]
    assert answer["results"][0]["result"]["name"] == "Lead"
    assert answer["results"][2]["result"]["totalSize"] == 2


def test_composite_batch_halts_after_an_error(sf):
    body = {
        "haltOnError": True,
        "batchRequests": [
            {"method": "GET", "url": "v59.0/sobjects/Nope/describe"},
            {"method": "GET", "url": "v59.0/sobjects/Lead/describe"},
        ],
    }
    answer = sf.restful("composite/batch", method="POST", json=body)
    assert answer["hasErrors"] is True
    assert answer["results"][0]["statusCode"] == 404
    assert answer["results"][1]["statusCode"] == 412
    assert answer["results"][1]["result"][0]["errorCode"] == "BATCH_PROCESSING_HALTED"
    # without haltOnError the rest still run
    body = {
        "batchRequests": [
            {"method": "GET", "url": "v59.0/sobjects/Nope/describe"},
            {"method": "GET", "url": "v59.0/sobjects/Lead/describe"},
        ]
    }
    answer = sf.restful("composite/batch", method="POST", json=body)
    assert [r["statusCode"] for r in answer["results"]] == [404, 200]


@pytest.mark.parametrize(
    "requests",
    [
        [{"method": "GET", "url": "v59.0/limits"}] * 26,  # at most 25
        [{"method": "GET", "url": "v60.0/limits"}],  # newer than the batch's version
        [{"method": "GET", "url": "v33.0/limits"}],  # older than 34.0
        [{"method": "FETCH", "url": "v59.0/limits"}],
    ],
)
def test_a_malformed_composite_batch_runs_nothing(sandbox, sf, requests):
    from simple_salesforce.exceptions import SalesforceMalformedRequest

    calls = sandbox.api_calls()
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite/batch", method="POST", json={"batchRequests": requests})
    assert sandbox.api_calls() == calls + 1  # the batch itself, no subrequest


def test_describe_has_every_standard_key(sf):
    described = sf.Lead.describe()
    assert set(SOBJECT_DEFAULTS) <= set(described)
    assert described["customSetting"] is False and described["listviewable"] is None
    for entry in described["fields"]:
        assert set(FIELD_DEFAULTS) <= set(entry), entry["name"]
    by_name = {entry["name"]: entry for entry in described["fields"]}
    assert by_name["Email"]["compoundFieldName"] is None
    assert by_name["Name"]["nameField"] is True and by_name["Email"]["nameField"] is False
    assert by_name["Lead_Score__c"]["aggregatable"] is True
    assert by_name["Industry"]["picklistValues"]
    assert by_name["OwnerId"]["referenceTo"] == ["User"]
    assert by_name["OwnerId"]["relationshipName"] == "Owner"
    assert by_name["Lead_Score__c"]["custom"] is True
    global_entry = next(o for o in sf.describe()["sobjects"] if o["name"] == "Lead")
    assert global_entry["customSetting"] is False and global_entry["queryable"] is True


def test_query_all_pages_say_query_all(sandbox, sf, page_size):
    first = sf.restful("queryAll", params={"q": "SELECT Id, IsDeleted FROM Lead"})
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/queryAll/01g")
    everything = sf.query_all("SELECT Id, IsDeleted FROM Lead", include_deleted=True)
    assert everything["totalSize"] == sandbox.sql("SELECT count(*) FROM Lead")[0][0]
    assert len(first["records"]) == page_size


def test_bulk2_query_counters_appear_when_the_job_completes(sandbox, session, token_for):
    headers = {"Authorization": f"Bearer {token_for(sandbox, session)}"}
    base = f"{sandbox.url}/services/data/v59.0/jobs/query"
    job = session.post(
        base, json={"operation": "query", "query": "SELECT Id FROM Lead"}, headers=headers
    )
    created = job.json()
    assert created["state"] == "UploadComplete" and created["numberRecordsProcessed"] == 0
    done = session.get(f"{base}/{created['id']}", headers=headers).json()
    live = sandbox.sql("SELECT count(*) FROM Lead WHERE IsDeleted = 0")[0][0]
    assert done["state"] == "JobComplete" and done["numberRecordsProcessed"] == live
