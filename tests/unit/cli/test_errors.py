"""One error path for every command: bad input is one line on stderr and exit code 2, through typer's
CliRunner and through the console script, never a traceback; text from the input is printed literally
(never read as rich markup)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bench.cli.app import app

# one bad input per command, and a fragment the one line must contain (what was wrong)
BAD = {
    "run": (["run", "no/such/sweep.yaml"], "no such file"),
    "tune": (["tune", "configs/sweeps/smoke.yaml", "--slo", "ttft_ms_p42<=5"], "unknown percentile 'p42'"),
    "sim": (["sim", "--port", "not-a-port"], "--port"),
    "models": (["models", "--no-such-flag"], "--no-such-flag"),
    "cost": (["cost", "--tok-s-per-gpu", "100"], "give --gpu"),
    "margin": (["margin", "--price", "glm-4.5-air@zai", "--tok-s-per-gpu", "-3", "--gpu", "h100"],
               "--tok-s-per-gpu: must be in"),
    "plan": (["plan", "--model", "glm-4.6", "--gpu", "h200", "--quant", "fp8", "--closed-form", "--slo",
              "itl_ms<=5"], "itl_ms"),
    "calibrate": (["calibrate", "no/such/run"], "--results"),
    "report": (["report", "no/such/run"], "no/such/run"),
    "catalog": (["catalog", "no/such/root"], "no/such/root is not a directory"),
    "query": (["query", "DROP VIEW points", "no/such/root"], "only a read-only SELECT"),
    "compare": (["compare", "--out", "no/such/out", "--utilization", "0"], "--utilization"),
    "import": (["import", "no/such/result.json", "--gpu", "h100"], "no/such/result.json: no such file"),
    "export": (["export", "no/such/run", "--format", "llm-d", "--out", "no/such/out"], "no/such/run must be a"),
}


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize("command", sorted(BAD))
def test_each_command_turns_bad_input_into_one_line_and_exit_2(command):
    args, fragment = BAD[command]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    err = _lines(r.stderr)
    assert len(err) == 1, r.stderr
    assert err[0].startswith("error: ") and fragment in err[0], err[0]
    assert "Traceback" not in r.output
    assert r.stdout.strip() == ""


def test_every_command_is_covered():
    from typer.main import get_command

    assert set(get_command(app).commands) == set(BAD)


def test_console_script_path_is_the_same_one_line_exit_2():
    r = subprocess.run([sys.executable, "-c", "from bench.cli.app import main; main()", "cost", "--tok-s-per-gpu",
                        "100"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert _lines(r.stderr) == [_lines(r.stderr)[0]] and "give --gpu" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_text_from_input_is_printed_literally_not_as_markup():
    # a rich tag in a path must reach the user as typed, not vanish or restyle the line
    r = CliRunner().invoke(app, ["report", "runs/[bold]x[/bold]"])
    assert r.exit_code == 2
    assert "runs/[bold]x[/bold]" in r.stderr


def test_a_failed_point_still_exits_1_not_2():
    # typer.Exit(1) from a command (run: a point failed) passes through the handler unchanged
    import typer

    from bench.cli.app import _OneLineErrors

    probe = typer.Typer(cls=_OneLineErrors)

    @probe.command()
    def fails() -> None:
        raise typer.Exit(1)

    @probe.command()
    def other() -> None:
        pass

    assert CliRunner().invoke(probe, ["fails"]).exit_code == 1
    assert CliRunner().invoke(probe, ["other"]).exit_code == 0
