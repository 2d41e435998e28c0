"""Administration: model versions, ``retry``, ``setup`` and ``doctor``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.errors import ConfigError, LeadscoreError
from connector.salesforce import (
    OUTPUT_FIELD_TYPES,
    FieldDescription,
    SalesforceClient,
    StreamSettings,
    create_custom_field,
    describe_object,
    field_metadata,
    read_campaigns,
    read_limits,
    suggest_field,
)
from scoring.metrics import headline
from scoring.registry import (
    ModelVersion,
    RegistryError,
    list_versions,
    load_challenger,
    load_champion,
    load_version,
    promote,
    rollback,
)
from sync.config import PredictionConfig, Settings
from sync.progress import Reporter
from sync.run import SILENT, JobResult, open_store, recorded, salesforce_settings
from sync.stages.push import run_push
from sync.stages.train import metrics_summary


def _registry_error(exc: RegistryError) -> ConfigError:
    return ConfigError(str(exc), hint="`leadscore models list --config FILE` shows the versions")


def _version_row(version: ModelVersion, champion: str | None, challenger: str | None) -> dict:
    meta = version.metadata
    metric, _ = headline(meta.get("task", "binary"))
    return {
        "version": version.version,
        "role": "champion"
        if version.version == champion
        else ("challenger" if version.version == challenger else ""),
        "task": meta.get("task", "binary"),
        "metric": metric,
        "value": meta.get("metrics", {}).get(metric),
        "deployed": meta.get("deployed", {}).get("model", "catboost"),
        "examples": meta.get("examples", {}).get("used"),
        "config_hash": meta.get("config_hash"),
        "trained_seconds": meta.get("seconds"),
    }


def list_models(settings: Settings, *, prediction: str | None = None) -> dict[str, list[dict]]:
    """Every stored model version per prediction, with its role and headline metric.

    Args:
        settings: configuration.
        prediction: only this prediction.

    Returns:
        Prediction name -> versions (oldest first).
    """
    names = (
        [settings.prediction(prediction).name]
        if prediction
        else [p.name for p in settings.predictions]
    )
    out: dict[str, list[dict]] = {}
    root = settings.store.models_dir
    for name in names:
        champion = load_champion(root, name)
        challenger = load_challenger(root, name)
        out[name] = [
            _version_row(
                v,
                champion.version if champion else None,
                challenger.version if challenger else None,
            )
            for v in list_versions(root, name)
        ]
    return out


def show_model(settings: Settings, prediction: str, version: str | None = None) -> dict[str, Any]:
    """The metadata of a model version (default: the champion).

    Args:
        settings: configuration.
        prediction: prediction name.
        version: version id.

    Returns:
        The metadata (without the bulky tables).

    Raises:
        ConfigError: unknown prediction or version, or no model yet.
    """
    name = settings.prediction(prediction).name
    root = settings.store.models_dir
    try:
        model = load_version(root, name, version) if version else load_champion(root, name)
    except RegistryError as exc:
        raise _registry_error(exc) from None
    if model is None:
        raise ConfigError(
            f"prediction '{name}' has no trained model", hint="run `leadscore train` first"
        )
    meta = dict(model.metadata)
    meta["metrics"] = metrics_summary(meta.get("metrics", {}))
    meta.pop("spec", None)
    return meta


def promote_model(settings: Settings, prediction: str, version: str | None = None) -> dict:
    """Make a version (default: the challenger) the champion.

    Args:
        settings: configuration.
        prediction: prediction name.
        version: version id.

    Returns:
        ``prediction, champion``.
    """
    name = settings.prediction(prediction).name
    try:
        model = promote(settings.store.models_dir, name, version)
    except RegistryError as exc:
        raise _registry_error(exc) from None
    return {"prediction": name, "champion": model.version}


def rollback_model(settings: Settings, prediction: str) -> dict:
    """Make the previous champion the champion again.

    Args:
        settings: configuration.
        prediction: prediction name.

    Returns:
        ``prediction, champion``.
    """
    name = settings.prediction(prediction).name
    try:
        model = rollback(settings.store.models_dir, name)
    except RegistryError as exc:
        raise _registry_error(exc) from None
    return {"prediction": name, "champion": model.version}


def run_retry(
    settings: Settings,
    *,
    dead: bool = True,
    gone: bool = False,
    reporter: Reporter = SILENT,
    client: SalesforceClient | None = None,
) -> JobResult:
    """Make dead letters due again and push: ``leadscore retry --dead`` (after fixing the cause).

    Args:
        settings: configuration.
        dead: revive dead rows.
        gone: also revive rows of records that were deleted or merged (restored since).
        reporter: progress.
        client: an already connected client.

    Returns:
        The push's result, with ``revived`` (ledger rows made due again) in its counts.
    """
    revived = 0
    if dead or gone:
        with open_store(settings, "retry", reporter=reporter) as store:
            revived = store.revive_dead_letters(include_gone=gone)
        reporter.stage(f"{revived:,} dead-letter row(s) due again; pushing")
    result = run_push(settings, reporter=reporter, client=client)
    result.counts["revived"] = revived
    return result


def _tier_values(prediction: PredictionConfig) -> list[str]:
    """Tier names, best first, then the lowest tier: the values of a tier picklist."""
    best_first = sorted(prediction.tiers, key=lambda tier: -prediction.tiers[tier])
    return [*best_first, prediction.lowest_tier]


def _output_fields_of(settings: Settings) -> list[tuple[PredictionConfig, str, str, str]]:
    """(prediction, object, output kind, field) for every configured Salesforce output."""
    out = []
    for prediction in settings.predictions:
        if prediction.salesforce is not None:
            for kind, name in prediction.salesforce.fields.items():
                out.append((prediction, prediction.salesforce.object, kind, name))
    return out


def _field_problem(
    prediction: PredictionConfig, kind: str, found: FieldDescription
) -> tuple[str, str] | None:
    """What is wrong with an existing output field, and how to fix it (None: nothing)."""
    spec = OUTPUT_FIELD_TYPES.get(kind)
    if spec is not None and found.type not in spec.describe_types:
        wanted = " or ".join(spec.describe_types)
        return (
            f"is a {found.type} field; {kind} needs {wanted}",
            f"map {kind} to another field in [predictions.salesforce] fields, or change its type",
        )
    if not found.updateable:
        return (
            "the integration user cannot edit it",
            "grant Edit in the field's field-level security to the integration user's profile "
            "or permission set",
        )
    if spec is not None and spec.picklist and found.restricted_picklist:
        missing = [v for v in _tier_values(prediction) if v not in found.picklist_values]
        if missing:
            return (
                f"the restricted picklist lacks the values {', '.join(missing)}",
                "add them to the field's values in Setup, or unrestrict the picklist",
            )
    return None


def run_setup(
    settings: Settings, *, dry_run: bool = False, reporter: Reporter = SILENT
) -> JobResult:
    """Create the Salesforce custom fields the predictions write to, through the Tooling API.

    Fields that exist are checked and left alone; missing ones are created with the type their
    output kind needs (``connector.salesforce.OUTPUT_FIELD_TYPES``); describe is read again
    afterwards, because a real org also needs field-level security granted before the
    integration user can see a new field.

    Args:
        settings: configuration.
        dry_run: only report what would be created.
        reporter: progress.

    Returns:
        ``fields``: one row per output field (object, field, kind, action, detail, fix), with
        action ``exists``, ``created``, ``would create`` or ``problem``; status ``partial`` when
        any field has a problem.
    """
    sf = SalesforceClient(settings.salesforce)
    try:
        with (
            open_store(settings, "setup", reporter=reporter) as store,
            recorded(store, "setup", sf.counter) as result,
        ):
            sf.connect()
            rows: list[dict[str, Any]] = []
            created: list[dict[str, Any]] = []
            for prediction, sobject, kind, name in _output_fields_of(settings):
                description = describe_object(sf, sobject)
                row: dict[str, Any] = {
                    "object": description.name,
                    "field": name,
                    "kind": kind,
                    "action": "exists",
                    "detail": "",
                    "fix": "",
                }
                rows.append(row)
                found = description.field(name)
                if found is not None:
                    row["field"] = found.name
                    problem = _field_problem(prediction, kind, found)
                    row["detail"] = found.type
                    if problem is not None:
                        row["action"] = "problem"
                        row["detail"], row["fix"] = problem
                    continue
                spec = OUTPUT_FIELD_TYPES.get(kind)
                if spec is None:
                    row.update(action="problem", detail=f"no field type is known for {kind}")
                    continue
                metadata = field_metadata(kind, name, picklist=_tier_values(prediction))
                row["detail"] = _describe_metadata(metadata)
                if dry_run:
                    row["action"] = "would create"
                    continue
                reporter.stage(f"creating {description.name}.{name} ({row['detail']})")
                create_custom_field(sf, description.name, name, metadata)
                row["action"] = "created"
                created.append(row)
            if created:
                # Real orgs: a new field is invisible until field-level security grants it.
                sf.forget_describes()
                for row in created:
                    found = describe_object(sf, row["object"]).field(row["field"])
                    if found is None:
                        row.update(
                            action="problem",
                            detail="created, but the integration user cannot see it",
                            fix="grant field-level security on it to the integration user's "
                            "profile or permission set, then run setup again",
                        )
                    elif not found.updateable:
                        row.update(
                            action="problem",
                            detail="created, but the integration user cannot edit it",
                            fix="grant Edit in its field-level security",
                        )
            problems = sum(1 for row in rows if row["action"] == "problem")
            result.counts = {
                "fields": rows,
                "created": sum(1 for row in rows if row["action"] == "created"),
                "would_create": sum(1 for row in rows if row["action"] == "would create"),
                "problems": problems,
                "dry_run": dry_run,
            }
            if problems:
                result.status = "partial"
    finally:
        sf.close()
    return result


def _describe_metadata(metadata: dict[str, Any]) -> str:
    """A short type description: ``Number(3,0)``, ``Text(255)``, ``Picklist(A,B,C,D)``."""
    kind = metadata["type"]
    if kind == "Number":
        return f"Number({metadata['precision']},{metadata['scale']})"
    if kind == "Text":
        return f"Text({metadata['length']})"
    if kind == "Picklist":
        values = [v["fullName"] for v in metadata["valueSet"]["valueSetDefinition"]["value"]]
        return f"Picklist({','.join(values)})"
    return str(kind)


@dataclass
class Check:
    """One line of ``leadscore doctor``.

    Attributes:
        check: what was checked.
        ok: whether it passed.
        detail: what was found.
        fix: how to fix it (empty when ok).
    """

    check: str
    ok: bool
    detail: str
    fix: str = ""


def run_doctor(
    settings: Settings, *, campaigns: Sequence[str] = (), reporter: Reporter = SILENT
) -> dict[str, Any]:
    """Check the Salesforce setup: login, allowance, streams, output fields and campaigns.

    Nothing is written (to Salesforce or the store).

    Args:
        settings: configuration.
        campaigns: Campaign ids to check (default: the Campaigns the audiences mirror).
        reporter: progress.

    Returns:
        ``ok`` (no problem found), ``checks`` (``check, ok, detail, fix`` each) and
        ``api_calls``.
    """
    s = salesforce_settings(settings)
    campaigns = list(campaigns) or [
        a.salesforce.campaign_id for a in settings.audiences if a.salesforce is not None
    ]
    checks: list[Check] = []
    sf = SalesforceClient(s)
    try:
        reporter.stage(f"logging in to {s.login_url} ({s.auth})")
        try:
            sf.connect()
        except LeadscoreError as exc:
            checks.append(Check("login", False, exc.message, exc.hint or ""))
            return _doctor_result(checks, sf)
        checks.append(Check("login", True, f"{s.auth} login to {sf.instance_url}"))
        checks.append(_check_allowance(sf))
        for sobject, stream in s.streams.items():
            checks.extend(_check_stream(sf, sobject, stream))
        for prediction, sobject, kind, name in _output_fields_of(settings):
            checks.append(_check_output(sf, prediction, sobject, kind, name))
        checks.extend(_check_campaigns(sf, campaigns))
        return _doctor_result(checks, sf)
    finally:
        sf.close()


def _doctor_result(checks: list[Check], sf: SalesforceClient) -> dict[str, Any]:
    return {
        "ok": all(c.ok for c in checks),
        "problems": sum(1 for c in checks if not c.ok),
        "checks": [c.__dict__ for c in checks],
        "api_calls": sf.counter.api_calls,
    }


def _check_allowance(sf: SalesforceClient) -> Check:
    try:
        limits = read_limits(sf)
    except LeadscoreError as exc:
        return Check("API allowance", False, exc.message, exc.hint or "")
    daily = limits.get("DailyApiRequests") or {}
    total, left = int(daily.get("Max") or 0), int(daily.get("Remaining") or 0)
    share = sf.settings.max_share_of_daily_limit
    detail = f"{left:,} of {total:,} daily API calls left"
    jobs = limits.get("DailyBulkV2QueryJobs")
    if jobs:
        detail += f"; {int(jobs.get('Remaining') or 0):,} bulk query jobs"
    if share is not None and total and total - left >= share * total:
        return Check(
            "API allowance",
            False,
            detail + f"; runs stop at {share:.0%} used (salesforce.max_share_of_daily_limit)",
            "wait for the 24-hour window, or raise salesforce.max_share_of_daily_limit",
        )
    if jobs and int(jobs.get("Remaining") or 0) == 0:
        return Check(
            "API allowance", False, detail, "bulk pulls wait for the 24-hour window to pass"
        )
    return Check("API allowance", True, detail)


def _check_stream(sf: SalesforceClient, sobject: str, stream: StreamSettings) -> list[Check]:
    setting = f"salesforce.streams.{sobject}"
    try:
        description = describe_object(sf, sobject)
    except LeadscoreError as exc:
        return [Check(f"stream {sobject}", False, exc.message, exc.hint or "")]
    problems = []
    for name in stream.fields:
        if description.field(name) is None:
            problems.append(
                Check(
                    f"{description.name}.{name}",
                    False,
                    f"does not exist or is not visible ({setting}.fields)",
                    suggest_field(description, name)
                    + " Otherwise grant read access in field-level security.",
                )
            )
    cursor = description.field(stream.cursor_field)
    if cursor is None or cursor.type != "datetime":
        problems.append(
            Check(
                f"{description.name}.{stream.cursor_field}",
                False,
                f"is not a datetime field ({setting}.cursor_field)",
                "use SystemModstamp",
            )
        )
    if problems:
        return problems
    return [Check(f"stream {description.name}", True, f"{len(stream.fields)} fields readable")]


def _check_output(
    sf: SalesforceClient, prediction: PredictionConfig, sobject: str, kind: str, name: str
) -> Check:
    label = f"{sobject}.{name}"
    try:
        description = describe_object(sf, sobject)
    except LeadscoreError as exc:
        return Check(label, False, exc.message, exc.hint or "")
    found = description.field(name)
    if found is None:
        return Check(
            label,
            False,
            f"the {kind} field does not exist or is not visible to the integration user",
            "run `leadscore setup --config FILE`, or grant field-level security on it",
        )
    problem = _field_problem(prediction, kind, found)
    if problem is not None:
        return Check(label, False, *problem)
    return Check(label, True, f"{kind}: {found.type}, editable")


def _check_campaigns(sf: SalesforceClient, campaigns: Sequence[str]) -> list[Check]:
    try:
        member = describe_object(sf, "CampaignMember")
    except LeadscoreError as exc:
        return [Check("campaign members", False, exc.message, exc.hint or "")]
    locked = [
        f
        for f in ("CampaignId", "LeadId", "ContactId")
        if member.field(f) is None or not member.field(f).createable  # type: ignore[union-attr]
    ]
    checks = [
        Check(
            "campaign members",
            not locked,
            "the integration user can add and remove campaign members"
            if not locked
            else f"cannot set CampaignMember {', '.join(locked)}",
            ""
            if not locked
            else "grant Create and Delete on Campaign Members and Edit on "
            "Campaigns (Marketing User) to the integration user",
        )
    ]
    if not campaigns:
        return checks
    try:
        found = read_campaigns(sf, campaigns)
    except LeadscoreError as exc:
        return [*checks, Check("campaigns", False, exc.message, exc.hint or "")]
    for campaign in campaigns:
        record = found.get(campaign)
        if record is None:
            checks.append(
                Check(
                    f"campaign {campaign}",
                    False,
                    "does not exist or is not visible",
                    "check the campaign id",
                )
            )
        elif not record["IsActive"]:
            checks.append(
                Check(
                    f"campaign {campaign}",
                    False,
                    f"'{record['Name']}' is not active",
                    "activate the campaign in Salesforce",
                )
            )
        else:
            checks.append(Check(f"campaign {campaign}", True, f"'{record['Name']}', active"))
    return checks
