"""Issue 25 item 7: `maas-bench sim --port 70000` was an OverflowError traceback from the socket layer; the
option's range is checked by click, one line, exit 2, before anything listens."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli.app import app


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_out_of_range_port_is_one_line(port):
    r = CliRunner().invoke(app, ["sim", "--port", port])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--port'"), r.stderr
    assert "Traceback" not in r.output
