"""``python -m demo``: start the stand-ins, load demo data, run ``watchdog run --once``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import json
import urllib.request
from datetime import UTC, datetime, timedelta

import boto3
from opensearchpy import OpenSearch, helpers

from demo.data import LOG_MAPPINGS, READER_SQL, WAREHOUSE_SQL, log_events
from tests.servers.postgres import LocalPostgres
from tests.servers.search import start_search

ROOT = Path(__file__).resolve().parent.parent


def load_logs(url: str) -> None:
    client = OpenSearch(hosts=[url])
    events = log_events(datetime.now(UTC))
    for day in sorted({e["@timestamp"][:10] for e in events}):
        client.indices.create(index=f"app-logs-{day.replace('-', '.')}", body={"mappings": LOG_MAPPINGS})
    helpers.bulk(client, ({"_index": f"app-logs-{e['@timestamp'][:10].replace('-', '.')}", "_source": e} for e in events),
                 refresh=True)
    client.close()


def fail_dms_task(url: str) -> None:
    """A replication task that ran, then failed the way DMS tasks do about once a month."""
    keys = {"region_name": "us-east-1", "aws_access_key_id": "demo", "aws_secret_access_key": "demo"}
    dms = boto3.client("dms", endpoint_url=url, **keys)
    instance = dms.create_replication_instance(ReplicationInstanceIdentifier="demo",
                                               ReplicationInstanceClass="dms.t3.micro")["ReplicationInstance"]
    task = dms.create_replication_task(
        ReplicationTaskIdentifier="prod-to-warehouse", SourceEndpointArn="arn:aws:dms:us-east-1:123456789012:endpoint:src",
        TargetEndpointArn="arn:aws:dms:us-east-1:123456789012:endpoint:tgt", MigrationType="full-load-and-cdc",
        ReplicationInstanceArn=instance["ReplicationInstanceArn"], TableMappings="{}")["ReplicationTask"]
    # Twenty minutes of CDC latency as DMS publishes it (CloudWatch AWS/DMS, one point a minute), for `lag:` checks.
    now = datetime.now(UTC)
    dimensions = [{"Name": "ReplicationInstanceIdentifier", "Value": "demo"},
                  {"Name": "ReplicationTaskIdentifier", "Value": task["ReplicationTaskArn"].rsplit(":", 1)[-1]}]
    boto3.client("cloudwatch", endpoint_url=url, **keys).put_metric_data(Namespace="AWS/DMS", MetricData=[
        {"MetricName": metric, "Dimensions": dimensions, "Timestamp": now - timedelta(minutes=m), "Value": value,
         "Unit": "Seconds"}
        for m in range(20) for metric, value in (("CDCLatencySource", 4.0 + m % 3), ("CDCLatencyTarget", 9.0 + m % 4))])
    dms.start_replication_task(ReplicationTaskArn=task["ReplicationTaskArn"], StartReplicationTaskType="start-replication")
    hook = urllib.request.Request(f"{url}/_watchdog/dms/task", method="POST", data=json.dumps({
        "task": "prod-to-warehouse", "status": "failed", "StopReason": "Stop Reason FATAL_ERROR",
        "LastFailureMessage": "Last Error ODBC general error. Task error notification received. Stop Reason FATAL_ERROR",
        "TablesErrored": 1}).encode())
    urllib.request.urlopen(hook, timeout=10).read()
    tables = urllib.request.Request(f"{url}/_watchdog/dms/tables", method="POST", data=json.dumps({
        "task": "prod-to-warehouse", "tables": [
            {"SchemaName": "public", "TableName": "logins", "Inserts": 18342, "Updates": 120, "FullLoadRows": 910000},
            {"SchemaName": "public", "TableName": "orders", "TableState": "Table error", "Inserts": 5120, "Updates": 88,
             "Deletes": 3, "FullLoadRows": 240000}]}).encode())
    urllib.request.urlopen(tables, timeout=10).read()


def main() -> int:
    state_dir = ROOT / ".demo"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir()
    sys.stdout.flush()
    print("demo: starting PostgreSQL, the search server and the DMS stand-in on 127.0.0.1", file=sys.stderr)
    pg = LocalPostgres.create(tempfile.gettempdir())
    search = start_search()
    moto = subprocess.Popen([sys.executable, "-m", "tests.servers.moto_dms", "--port", "0"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"})
    try:
        assert moto.stdout is not None
        dms_url = moto.stdout.readline().strip()
        pg.psql("create database warehouse")
        pg.psql(WAREHOUSE_SQL, dbname="warehouse")
        pg.psql(READER_SQL, dbname="warehouse")
        load_logs(search.url)
        fail_dms_task(dms_url)
        env = {
            **os.environ,
            "WATCHDOG_DEMO_SEARCH_URL": search.url,
            "WATCHDOG_DEMO_WAREHOUSE_DSN": pg.dsn_for("warehouse").replace(f"user={pg.user}", "user=watchdog_reader"),
            "WATCHDOG_DEMO_REFRESH_DSN": pg.dsn_for("warehouse"),
            "WATCHDOG_DEMO_DMS_URL": dms_url,
            "WATCHDOG_DEMO_STATE": str(state_dir / "state.db"),
            "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
        }
        config = str(ROOT / "demo" / "watchdog.yaml")
        watchdog = [sys.executable, "-m", "watchdog"]
        print("demo: watchdog validate", file=sys.stderr, flush=True)
        subprocess.run([*watchdog, "validate", "-c", config], env=env, check=True)
        print("demo: watchdog run --once (alerts print below, one line each)", file=sys.stderr, flush=True)
        code = subprocess.run([*watchdog, "run", "--once", "-c", config], env=env).returncode
        print("demo: watchdog status", file=sys.stderr, flush=True)
        subprocess.run([*watchdog, "status", "-c", config], env=env, check=True)
        return code
    finally:
        if moto.stdin:
            moto.stdin.close()
        moto.wait(10)
        search.close()
        pg.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
