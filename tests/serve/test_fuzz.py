"""A schema-driven fuzz run against a real server: schemathesis reads `/openapi.json` and sends generated
requests, valid and invalid, to every route on the loopback port; no answer may be a 5xx or break the schema
the server publishes. Bounded in examples and seconds, with a fixed seed, so a failure reproduces."""

import subprocess
import sys

import pytest
from scripted import API_KEY

CLI = "from schemathesis.cli import schemathesis; schemathesis()"


@pytest.mark.slow
def test_no_generated_request_gets_a_5xx_or_breaks_the_schema(server, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "run",
            server.url + "/openapi.json",
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--max-time",
            "90",
            "--seed",
            "1",
            "--workers",
            "2",
            "--request-timeout",
            "60",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # schemathesis keeps its state in the working folder
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "generated" in done.stdout and "failure" not in done.stdout.split("SUMMARY")[-1].lower()
