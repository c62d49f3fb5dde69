"""The Grafana dashboard (deploy/grafana) queries only series that `/metrics` exports.

Run here, where chat providers are configured, because the cloud budget's family is exported
only then; every other family is exported by any service.
"""

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/memory-service.json"
SERIES = re.compile(r"\bmemory_[a-z_]+")
# A query names a histogram's or counter's series; the parser names their family.
SUFFIXES = re.compile(r"_(bucket|count|sum|total)$")


async def test_every_series_the_dashboard_queries_is_exported(client: httpx.AsyncClient) -> None:
    families = {
        family.name
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
    }
    queried = {
        SUFFIXES.sub("", name)
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
        for name in SERIES.findall(target["expr"])
    }
    assert len(queried) >= 15
    assert queried - families == set()
