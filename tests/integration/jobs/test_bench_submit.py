"""`bench run --submit` is refused before any request when it could not be sent afterwards."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from npucenter.cli.main import app as cli_app

# An endpoint nothing listens on: a refused --submit must not get as far as benchmarking it.
RUN = ["bench", "run", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--rate", "1"]


@pytest.fixture(autouse=True)
def _no_center(monkeypatch):
    for name in ("NPUCENTER_URL", "NPUCENTER_API_KEY", "NPUCENTER_JOB_ID"):
        monkeypatch.delenv(name, raising=False)


def test_submit_without_a_job_is_refused_up_front():
    result = CliRunner().invoke(cli_app, [*RUN, "--submit", "--no-progress"])
    assert result.exit_code == 2 and "--submit needs the job" in result.output


def test_submit_without_the_centers_url_and_key_is_refused_up_front(monkeypatch):
    monkeypatch.setenv("NPUCENTER_JOB_ID", "7")  # as inside a job the center runs
    result = CliRunner().invoke(cli_app, [*RUN, "--submit", "--no-progress"])
    assert result.exit_code == 2 and "NPUCENTER_URL" in result.output
    suite = ["bench", "suite", "--endpoint", "http://127.0.0.1:9", "--model", "m"]
    result = CliRunner().invoke(cli_app, [*suite, "--submit", "--job", "3"])
    assert result.exit_code == 2 and "NPUCENTER_URL" in result.output
