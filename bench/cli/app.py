"""The maas-bench typer app: the commands, ONE error handler, and the console-script entry point.

Every command that answers with a table also takes `--json`. Bad input becomes one line on stderr and
exit code 2, whichever way the app is called (the `maas-bench` console script via `main()`, or
`typer.testing.CliRunner().invoke(app, ...)`): both end in the click group's `main` (typer's vendored
click), so the handler is an override of that one method on the app's group (`_OneLineErrors`). It covers:

- `UserInputError` raised by any library code (config files, flags checked deep down);
- pydantic `ValidationError` that escaped a config loader's own formatting;
- an `OSError` no command checked for first (a disk that fills up mid-write): `<path>: <reason>`;
- click usage errors (`BadParameter`, missing option, no such command) that typer would otherwise draw
  as a multi-line box.

The command modules (measure, money, report) only plumb arguments and print.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from typer._click import exceptions as cx  # typer >= 0.20 vendors click: its exceptions live here
from typer.core import TyperGroup

from bench.cli import catalog_cmd, measure, money, report, results_cmd
from bench.cli.output import say
from bench.config.base import format_validation_error, set_user_config_dir
from bench.errors import UserInputError

BAD_INPUT_EXIT = 2


def one_line(text: str) -> str:
    """Collapse any whitespace (newlines from nested errors included) so the reason is one line."""
    return " ".join(str(text).split()) or "bad input"


def _validation_text(e: ValidationError) -> str:
    return format_validation_error(e.title, e, top_level="(top level)", raw=True)


class _OneLineErrors(TyperGroup):
    """The one error path: run click non-standalone, turn bad input into one line and exit 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        _sigterm_like_sigint()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except cx.NoArgsIsHelpError as e:
            e.show()  # the help text is the answer to "maas-bench" with no arguments
            sys.exit(e.exit_code)
        except cx.UsageError as e:
            _error(e.format_message())
        except cx.ClickException as e:
            say(one_line(e.format_message()), err=True, prefix="error: ", prefix_style="bold red")
            sys.exit(e.exit_code)
        except UserInputError as e:
            _error(str(e))
        except ValidationError as e:
            _error(_validation_text(e))
        except OSError as e:  # the fallback for a path the commands did not check first (full disk, ...)
            _error(_os_error_text(e))
        except typer.Abort:
            say("aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is a typer.Exit code, e.g. 1 = a point failed


def _interrupt(signum: int, frame: Any) -> None:
    # Re-sent as SIGINT, not raised here: during a point's requests asyncio's runner turns SIGINT into a
    # cancellation of the main task, while a KeyboardInterrupt raised in this handler can land inside an
    # event-loop callback, where uvloop swallows it into one failed request and the sweep goes on
    # (measured on vLLM: scripts/fault_table.py case d). Outside asyncio SIGINT raises KeyboardInterrupt.
    os.kill(os.getpid(), signal.SIGINT)


def _sigterm_like_sigint() -> None:
    """`kill <pid>` (SIGTERM) stops a run the way Ctrl-C does: KeyboardInterrupt unwinds the sweep,
    so every started server is stopped and the rows written so far stay. Only from the main thread
    (signal handlers can only be set there; CliRunner in a worker thread just skips it).

    An ignored SIGINT is taken back to Python's default first: a shell starts a background job (`cmd &`
    in a script, nohup) with SIGINT ignored, and the re-sent SIGINT was then ignored too, so `kill` never
    stopped a backgrounded `run` and `maas-bench sim` kept serving until SIGKILL (issue 25). asyncio's runner
    only turns SIGINT into a cancellation when the handler is Python's default, so this must precede it."""
    import threading

    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)


def _os_error_text(e: OSError) -> str:
    """`<path>: <reason>` for an OSError that reached the handler (the path it names, when it names one)."""
    reason = e.strerror or str(e) or type(e).__name__
    where = e.filename if e.filename is not None else None
    if where is None:
        return f"cannot write or read a file: {reason}"
    return f"{where}: {reason}"


def _error(message: str) -> None:
    say(one_line(message), err=True, prefix="error: ", prefix_style="bold red")
    sys.exit(BAD_INPUT_EXIT)


app = typer.Typer(
    name="maas-bench",
    cls=_OneLineErrors,
    help="Inference cost benchmarking for MaaS: measure vLLM, price tokens, compute gross margin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _global_options(
    config_dir: Path | None = typer.Option(
        None, "--config-dir", metavar="DIR",
        help="Your own configs: DIR/hardware.yaml, prices.yaml, roofline.yaml and models/*.yaml override the "
             "shipped entries by id (GPU, price key, model name). Default: $MAAS_BENCH_CONFIG_DIR, if set."),
) -> None:
    """Inference cost benchmarking for MaaS: measure vLLM, price tokens, compute gross margin."""
    set_user_config_dir(config_dir)


for _fn in (measure.models, measure.run, measure.sim, money.cost, money.margin, money.plan, money.calibrate,
            report.report, measure.tune, catalog_cmd.catalog, catalog_cmd.query, catalog_cmd.compare,
            results_cmd.import_results, results_cmd.export):
    app.command()(_fn)


def main() -> None:
    """Console-script entry point (`maas-bench`); errors are handled by the app's group, not here."""
    app()


if __name__ == "__main__":
    main()
