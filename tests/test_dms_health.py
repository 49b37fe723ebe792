"""DMS health beyond task state: table errors, validation failures and CDC lag.

Against the moto server extended with DescribeTableStatistics and ReloadTables
(tests/servers/moto_dms.py) and moto's own CloudWatch, fed with
``put_metric_data``: every call goes over HTTP through boto3.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Clock, engine_for, evaluate_now, write_project
from tests.servers import moto_dms
from tests.servers.moto_dms import MotoDms
from watchdog.config import DmsSource as DmsConfig
from watchdog.engine import Engine
from watchdog.lifecycle import State
from watchdog.loader import load_rules
from watchdog.rule import Severity
from watchdog.ruletypes import dms_lag, dms_tables
from watchdog.ruletypes.dms_options import LagCheck
from watchdog.sources.dms import DmsSource
from watchdog.state import StateStore

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
TASK = "prod-to-warehouse"


def aws(moto: MotoDms, service: str) -> Any:
    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1")


def create_task(moto: MotoDms, name: str = TASK, instance: str = "ri-main", migration: str = "cdc") -> str:
    """A running task on a replication instance that exists (CloudWatch's dimension is its identifier)."""
    dms = aws(moto, "dms")
    arn = instance_arn(instance) or dms.create_replication_instance(
        ReplicationInstanceIdentifier=instance, ReplicationInstanceClass="dms.t3.micro")["ReplicationInstance"][
        "ReplicationInstanceArn"]
    task = dms.create_replication_task(
        ReplicationTaskIdentifier=name, SourceEndpointArn="arn:src", TargetEndpointArn="arn:tgt",
        ReplicationInstanceArn=arn, MigrationType=migration, TableMappings="{}")["ReplicationTask"]
    dms.start_replication_task(ReplicationTaskArn=task["ReplicationTaskArn"], StartReplicationTaskType="start-replication")
    moto.requests.clear()
    return str(task["ReplicationTaskArn"])


def instance_arn(instance: str) -> str | None:
    from moto.dms.models import dms_backends

    found = [arn for arn, i in dms_backends[moto_dms.ACCOUNT]["us-east-1"].replication_instances.items() if i.id == instance]
    return found[0] if found else None


def put_latency(moto: MotoDms, task_arn: str, points: list[tuple[datetime, float]], metric: str = "CDCLatencySource",
                instance: str = "ri-main") -> None:
    dimensions = [{"Name": "ReplicationInstanceIdentifier", "Value": instance},
                  {"Name": "ReplicationTaskIdentifier", "Value": dms_lag.resource_id(task_arn)}]
    aws(moto, "cloudwatch").put_metric_data(Namespace="AWS/DMS", MetricData=[
        {"MetricName": metric, "Dimensions": dimensions, "Timestamp": at, "Value": value, "Unit": "Seconds"}
        for at, value in points])
    moto.requests.clear()


def project(tmp_path: Path, moto: MotoDms, rules: dict[str, str]) -> Any:
    return write_project(tmp_path, f"""\
        rules_dir: rules
        state_path: state.db
        sources:
          aws: {{type: dms, region: us-east-1, endpoint_url: "{moto.url}", cloudwatch_endpoint_url: "{moto.url}"}}
        """, rules)


TABLES_RULE = f"name: dms-tables\ntype: dms_task\nsource: aws\ntasks: [{TASK}]\ntables: true\n"
LAG_RULE = f"name: dms-lag\ntype: dms_task\nsource: aws\ntasks: [{TASK}]\nlag: {{warn_after: 5m, error_after: 30m}}\n"


def firing(engine: Engine, rule: str) -> dict[str, Any]:
    return {g: s for g, s in engine.store.groups().get(rule, {}).items() if s.state == State.FIRING}


def test_suspended_table_alerts_for_that_table_with_its_counters(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [
        {"SchemaName": "sales", "TableName": "customers"},
        {"SchemaName": "sales", "TableName": "orders", "TableState": "Table error", "Inserts": 120, "Updates": 7,
         "Deletes": 1, "FullLoadRows": 5000},
    ])
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, {"dms-tables": TABLES_RULE}), clock)
    evaluate_now(engine)
    alerts = firing(engine, "dms-tables")
    assert set(alerts) == {f"{TASK}/sales.orders"}  # the task itself is running: no task alert
    state = alerts[f"{TASK}/sales.orders"]
    assert state.severity == Severity.CRITICAL
    assert state.summary == (f"table sales.orders of task {TASK} is in state Table error and no longer replicating "
                             "(inserts 120, updates 7, deletes 1, DDLs 0, full load rows 5000, full load error rows 0)")
    assert state.details["table"] == "orders" and state.details["inserts"] == 120

    moto_dms.set_tables(TASK, [{"SchemaName": "sales", "TableName": "orders", "TableState": "Table completed"}])
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    assert firing(engine, "dms-tables") == {}
    (resolved,) = [json.loads(r[0]) for r in engine.store.db.execute(
        "select payload from outbox where rule = 'dms-tables' and kind = 'resolved'")]
    assert resolved["body"] == (f"table sales.orders of task {TASK} is Table completed now (inserts 120, updates 7, "
                                "deletes 1, DDLs 0, full load rows 5000, full load error rows 0) (resolved after 1m)")
    observed = engine.store.rule_records()["dms-tables"].facts["observed"]
    assert observed == [f"{TASK}/sales.customers", f"{TASK}/sales.orders"]  # known to status and silence while ok


def test_validation_failures_alert_as_warnings(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [
        {"SchemaName": "sales", "TableName": "orders", "ValidationState": "Mismatched records",
         "ValidationFailedRecords": 7, "ValidationPendingRecords": 2},
        {"SchemaName": "sales", "TableName": "items", "ValidationState": "Validated"},
    ])
    engine = engine_for(project(tmp_path, moto, {"dms-tables": TABLES_RULE}), Clock(NOW))
    evaluate_now(engine)
    alerts = firing(engine, "dms-tables")
    assert set(alerts) == {f"{TASK}/sales.orders"}
    state = alerts[f"{TASK}/sales.orders"]
    assert state.severity == Severity.WARNING and state.value == 7
    assert state.summary.startswith(f"table sales.orders of task {TASK} failed validation: 7 record(s) failed, 0 suspended")
    assert "validation Mismatched records: 7 failed, 0 suspended, 2 pending" in state.summary


def test_table_alert_on_chooses_conditions(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [
        {"SchemaName": "s", "TableName": "cancelled", "TableState": "Table cancelled"},
        {"SchemaName": "s", "TableName": "mismatch", "ValidationFailedRecords": 3},
    ])
    rule = f"name: dms-tables\ntype: dms_task\nsource: aws\ntables: {{alert_on: [cancelled]}}\n"
    engine = engine_for(project(tmp_path, moto, {"dms-tables": rule}), Clock(NOW))
    evaluate_now(engine)
    assert set(firing(engine, "dms-tables")) == {f"{TASK}/s.cancelled"}


def test_table_statistics_follow_pagination(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "s", "TableName": f"t{i:04}"} for i in range(620)]
                        + [{"SchemaName": "zz", "TableName": "last", "TableState": "Table error"}])
    engine = engine_for(project(tmp_path, moto, {"dms-tables": TABLES_RULE}), Clock(NOW))
    evaluate_now(engine)
    assert moto.calls("DescribeTableStatistics") == ["DescribeTableStatistics"] * 2  # 621 tables, 500 a page
    assert set(firing(engine, "dms-tables")) == {f"{TASK}/zz.last"}


def test_a_table_no_longer_reported_is_a_finding_not_a_resolution(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "s", "TableName": "gone", "TableState": "Table error"}])
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, {"dms-tables": TABLES_RULE}), clock)
    evaluate_now(engine)
    moto_dms._tables.clear()  # the table left the task's mappings
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    state = firing(engine, "dms-tables")[f"{TASK}/s.gone"]
    assert state.value == "unknown" and "DMS no longer reports this table" in state.summary


def test_table_check_denied_is_reported_not_silent() -> None:
    client = boto3.client("dms", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    source = DmsSource(DmsConfig(name="aws", region="us-east-1"), client=client)
    task = {"ReplicationTaskIdentifier": "t1", "ReplicationTaskArn": "arn:aws:dms:us-east-1:1:task:T1", "Status": "running"}
    from watchdog.ruletypes.dms_options import TableCheck
    from watchdog.ruletypes.dms_task import table_findings

    stub = Stubber(client)
    stub.add_client_error("describe_table_statistics", service_error_code="AccessDeniedException", service_message="no")
    with stub:
        found, _, _, _ = table_findings([task], TableCheck(), source, {"t1/s.orders"})
    assert [(f.group, f.value) for f in found] == [("t1/tables", "unknown"), ("t1/s.orders", "unknown")]
    assert "could not check the tables of task t1: AWS denied dms:DescribeTableStatistics" in found[0].summary


def test_lag_warns_then_errors_then_resolves(tmp_path: Path, moto: MotoDms) -> None:
    arn = create_task(moto)
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, {"dms-lag": LAG_RULE}), clock)
    put_latency(moto, arn, [(NOW - timedelta(minutes=3), 60.0), (NOW - timedelta(minutes=1), 400.0)])
    put_latency(moto, arn, [(NOW - timedelta(minutes=1), 420.0)], metric="CDCLatencyTarget")
    evaluate_now(engine)
    state = firing(engine, "dms-lag")[f"{TASK}/lag"]
    assert state.severity == Severity.WARNING and state.value == 420.0
    assert state.summary == f"CDC latency of task {TASK} is 7m (source 6m40s, target 7m), at or above 5m"

    clock.now = NOW + timedelta(minutes=5)
    put_latency(moto, arn, [(clock.now - timedelta(minutes=1), 2400.0)])
    evaluate_now(engine)
    state = firing(engine, "dms-lag")[f"{TASK}/lag"]
    assert state.severity == Severity.CRITICAL and "is 40m (source 40m, target" in state.summary

    clock.now = NOW + timedelta(minutes=10)
    put_latency(moto, arn, [(clock.now - timedelta(minutes=1), 4.0)])
    put_latency(moto, arn, [(clock.now - timedelta(minutes=1), 6.0)], metric="CDCLatencyTarget")
    evaluate_now(engine)
    assert firing(engine, "dms-lag") == {}
    sent = [(r[0], json.loads(r[1])) for r in engine.store.db.execute(
        "select kind, payload from outbox where rule = 'dms-lag' order by id")]
    assert sent[0][0] == "firing" and sent[-1][0] == "resolved"
    # The resolution states the latency now, never the firing text.
    assert sent[-1][1]["body"] == f"CDC latency of task {TASK} is 6s now (source 4s, target 6s) (resolved after 10m)"


def test_lag_stall_is_critical(tmp_path: Path, moto: MotoDms) -> None:
    arn = create_task(moto)
    rule = f"name: dms-lag\ntype: dms_task\nsource: aws\nlag: {{warn_after: 1h, error_after: 2h, stall_after: 15m}}\n"
    put_latency(moto, arn, [(NOW - timedelta(minutes=15 - m), 30.0 + 60 * m) for m in range(15)])
    put_latency(moto, arn, [(NOW - timedelta(minutes=15 - m), 0.0) for m in range(15)], metric="CDCIncomingChanges")
    engine = engine_for(project(tmp_path, moto, {"dms-lag": rule}), Clock(NOW))
    evaluate_now(engine)
    state = firing(engine, "dms-lag")[f"{TASK}/lag"]
    assert state.severity == Severity.CRITICAL
    assert state.summary.startswith(f"task {TASK} looks stalled: CDC source latency grew from 30s to 14m30s over 15m "
                                    "and no incoming changes")


def test_running_task_without_latency_datapoints_is_a_finding(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    create_task(moto, "full-load-only", migration="full-load")  # no CDC: no latency to expect
    rule = "name: dms-lag\ntype: dms_task\nsource: aws\nlag: true\n"
    engine = engine_for(project(tmp_path, moto, {"dms-lag": rule}), Clock(NOW))
    evaluate_now(engine)
    alerts = firing(engine, "dms-lag")
    assert set(alerts) == {f"{TASK}/lag"}
    assert alerts[f"{TASK}/lag"].summary == (f"no CDC latency reported for task {TASK} in the last 10m "
                                             "(CloudWatch AWS/DMS has no datapoint)")


def test_requests_per_evaluation(tmp_path: Path, moto: MotoDms) -> None:
    arns = [create_task(moto, name) for name in ("a-task", "b-task", "c-task")]
    for name in ("a-task", "b-task", "c-task"):
        moto_dms.set_tables(name, [{"SchemaName": "s", "TableName": "t", "TableState": "Table error"}])
    for arn in arns:
        put_latency(moto, arn, [(NOW - timedelta(minutes=1), 600.0)])
    rule = "name: dms\ntype: dms_task\nsource: aws\ntables: true\nlag: {warn_after: 5m, error_after: 30m}\n"
    clock = Clock(NOW)
    engine = engine_for(project(tmp_path, moto, {"dms": rule}), clock)
    evaluate_now(engine)
    assert len(firing(engine, "dms")) == 6
    # The first evaluation also learns the replication instance's identifier (CloudWatch's dimension), once.
    assert sorted(moto.calls()) == sorted(["DescribeReplicationTasks", "DescribeReplicationInstances", "GetMetricData"]
                                          + ["DescribeTableStatistics"] * 3)
    moto.requests.clear()
    clock.now = NOW + timedelta(minutes=1)
    evaluate_now(engine)
    assert sorted(moto.calls()) == sorted(["DescribeReplicationTasks", "GetMetricData"] + ["DescribeTableStatistics"] * 3)


def test_lag_options_are_checked(tmp_path: Path, moto: MotoDms) -> None:
    config = project(tmp_path, moto, {
        "bad-order": "name: bad-order\ntype: dms_task\nsource: aws\nlag: {warn_after: 30m, error_after: 5m}\n",
        "bad-key": "name: bad-key\ntype: dms_task\nsource: aws\ntables: {alert_on: [eror]}\n",
        "good": "name: good\ntype: dms_task\nsource: aws\ntables: {alert_on: [error]}\nlag: {error_after: 1h, stall_after: 20m}\n",
    })
    result = load_rules([config.rules_dir], config)
    assert [r.name for r in result.rules] == ["good"]
    messages = " | ".join(str(p) for p in result.problems)
    assert "'error_after' must be longer than 'warn_after'" in messages
    assert "tables.alert_on[0]: 'eror' is not one of: error, cancelled, validation_failed (did you mean 'error'?)" in messages
    lag = result.rules[0].options.lag
    assert lag == LagCheck(warn_after=None, error_after=timedelta(hours=1), stall_after=timedelta(minutes=20))


# --- untrusted answers: whatever AWS (or a stand-in for it) says, evaluation is total and its text bounded ---------

ROW_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(),
                       st.text(max_size=300), st.lists(st.integers(), max_size=3))
ROWS = st.lists(st.dictionaries(st.sampled_from(["SchemaName", "TableName", "TableState", "ValidationState", "Inserts",
                                                 "ValidationFailedRecords", "ValidationSuspendedRecords", "FullLoadRows"]),
                                ROW_VALUES), max_size=5)


@settings(max_examples=60, deadline=None)
@given(ROWS, st.frozensets(st.sampled_from(["error", "cancelled", "validation_failed"]), min_size=1))
def test_table_findings_are_total_and_plain(rows: list[dict[str, Any]], alert_on: frozenset[str]) -> None:
    for finding in dms_tables.findings("t", rows, alert_on, {"t/x.y"}):
        text = finding.summary + finding.group
        assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in text)
        assert len(finding.group) <= 2 + 2 * dms_tables.MAX_NAME + 1
        assert len(finding.summary) < 1200


POINTS = st.lists(st.tuples(st.integers(min_value=-30, max_value=0).map(lambda m: NOW + timedelta(minutes=m)),
                            st.floats(allow_nan=True, allow_infinity=True)), max_size=20)


@settings(max_examples=60, deadline=None)
@given(POINTS, POINTS, POINTS)
def test_lag_assessment_is_total(source: list[tuple[datetime, float]], target: list[tuple[datetime, float]],
                                 incoming: list[tuple[datetime, float]]) -> None:
    series = {"s": sorted(source), "t": sorted(target), "c": sorted(incoming)}
    check = LagCheck(warn_after=timedelta(minutes=5), error_after=timedelta(minutes=30), stall_after=timedelta(minutes=15))
    finding = dms_lag.assess(dms_lag.Target("t", "ri", "T"), series, NOW, check)
    if finding is not None:
        assert finding.group == "t/lag" and len(finding.summary) < 400


@pytest.mark.parametrize("name", ["orders\n*bold* <!channel>", "x" * 500, "ta\u202eble\x00"])
def test_hostile_table_names_stay_data(tmp_path: Path, moto: MotoDms, name: str) -> None:
    create_task(moto)
    moto_dms.set_tables(TASK, [{"SchemaName": "s", "TableName": name, "TableState": "Table error"}])
    engine = engine_for(project(tmp_path, moto, {"dms-tables": TABLES_RULE}), Clock(NOW))
    evaluate_now(engine)
    (group, state), = firing(engine, "dms-tables").items()
    assert "\n" not in state.summary and "\x00" not in group and "\u202e" not in group
    assert len(state.details["table"]) <= dms_tables.MAX_NAME


def test_long_multiline_failure_message_stays_one_bounded_line(tmp_path: Path, moto: MotoDms) -> None:
    create_task(moto)
    moto_dms.set_task(TASK, status="failed", StopReason="Stop Reason FATAL_ERROR",
                      LastFailureMessage="Last Error\n*ODBC* <!here>\r\n" + "x" * 5000)
    rule = f"name: dms\ntype: dms_task\nsource: aws\ntasks: [{TASK}]\n"
    engine = engine_for(project(tmp_path, moto, {"dms": rule}), Clock(NOW))
    evaluate_now(engine)
    state = firing(engine, "dms")[TASK]
    assert "\n" not in state.summary and "\r" not in state.summary
    assert state.summary.startswith(f"task {TASK} is failed (stop reason FATAL_ERROR): Last Error *ODBC* <!here> xxx")
    assert len(state.details["last_failure"]) == 500


def test_lag_check_denied_is_reported_per_task_not_silent() -> None:
    keys = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "y"}
    dms, cloudwatch = boto3.client("dms", **keys), boto3.client("cloudwatch", **keys)
    source = DmsSource(DmsConfig(name="aws", region="us-east-1"), client=dms, cloudwatch=cloudwatch)
    task = {"ReplicationTaskIdentifier": "t1", "ReplicationTaskArn": "arn:aws:dms:us-east-1:1:task:T1", "Status": "running",
            "MigrationType": "cdc", "ReplicationInstanceArn": "arn:aws:dms:us-east-1:1:rep:R1"}
    from watchdog.ruletypes.base import EvalContext
    from watchdog.ruletypes.dms_task import lag_findings

    dms_stub, cw_stub = Stubber(dms), Stubber(cloudwatch)
    dms_stub.add_response("describe_replication_instances", {"ReplicationInstances": [
        {"ReplicationInstanceArn": "arn:aws:dms:us-east-1:1:rep:R1", "ReplicationInstanceIdentifier": "ri-1"}]})
    cw_stub.add_client_error("get_metric_data", service_error_code="AccessDenied", service_message="no")
    with dms_stub, cw_stub:
        found, _, _ = lag_findings([task], LagCheck(), source, EvalContext(now=NOW), set())
    assert [(f.group, f.value) for f in found] == [("t1/lag", "unknown")]
    assert found[0].summary.startswith("CDC latency of task t1: could not check: AWS denied cloudwatch:GetMetricData")
