"""The test harness's real services answer as the real things do."""

from __future__ import annotations

import json
import urllib.request

import boto3
import psycopg2
import pytest
from opensearchpy import OpenSearch
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler


def test_postgres_accepts_connections(pg_db: str) -> None:
    with psycopg2.connect(pg_db) as conn, conn.cursor() as cur:
        cur.execute("select current_setting('fsync'), version()")
        fsync, version = cur.fetchone()
    assert fsync == "off"
    assert version.startswith("PostgreSQL")


def test_search_server_indexes_and_counts(search) -> None:
    client = OpenSearch(hosts=[search.url])
    client.index(index="app-logs-2026.11.28", body={"@timestamp": "2026-11-28T01:00:00Z", "level": "error"}, refresh=True)
    assert client.count(index="app-logs-*")["count"] == 1
    assert search.total("/app-logs") >= 2


def test_moto_hook_marks_a_task_failed(moto) -> None:
    dms = boto3.client("dms", endpoint_url=moto.url, region_name="us-east-1")
    task = dms.create_replication_task(
        ReplicationTaskIdentifier="prod-to-warehouse", SourceEndpointArn="arn:src", TargetEndpointArn="arn:tgt",
        ReplicationInstanceArn="arn:ri", MigrationType="cdc", TableMappings="{}")["ReplicationTask"]
    req = urllib.request.Request(f"{moto.url}/_watchdog/dms/task", method="POST", data=json.dumps(
        {"task": "prod-to-warehouse", "status": "failed", "StopReason": "STOP_REASON_FATAL_ERROR",
         "LastFailureMessage": "Last Error ODBC general error."}).encode())
    urllib.request.urlopen(req).read()
    (seen,) = dms.describe_replication_tasks()["ReplicationTasks"]
    assert seen["ReplicationTaskArn"] == task["ReplicationTaskArn"]
    assert (seen["Status"], seen["StopReason"]) == ("failed", "STOP_REASON_FATAL_ERROR")
    assert seen["LastFailureMessage"] == "Last Error ODBC general error."
    assert moto.calls() == ["CreateReplicationTask", "DescribeReplicationTasks"]


def test_slack_server_scripts_rate_limits_and_errors(slack) -> None:
    client = WebClient(token="xoxb-test", base_url=slack.base_url,
                       retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    slack.fail_next({"status": 429, "retry_after": 0})
    answer = client.chat_postMessage(channel="#alerts", text="hello")
    assert answer["ok"] and len(slack.calls("chat.postMessage")) == 2
    slack.fail_next({"error": "invalid_auth"})
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="#alerts", text="hello")
    assert info.value.response["error"] == "invalid_auth"
