"""`maas-bench cost`: $/M tokens for a GPU at a cost tier or owned TCO, at a throughput and utilization.

Argument plumbing and printing only: the rows come from bench.econ.queries.cost_rows.
"""

from __future__ import annotations

import typer

from bench.cli import money_options as opts
from bench.cli.output import print_json, print_table
from bench.econ.cost import DEFAULT_UTILIZATION
from bench.errors import UserInputError


def cost(
    gpu: str | None = typer.Option(None, "--gpu", help="GPU id from configs/hardware.yaml, e.g. h100."),
    tier: str | None = typer.Option(None, "--tier", help=opts.TIER_HELP.replace("Default: owning-neocloud, else the "
                                    "GPU's first tier (said).", "Default: every tier of the GPU.")),
    output_tok_s_per_gpu: float | None = typer.Option(None, "--output-tok-s-per-gpu",
                                                      help=opts.OUT_TOK_HELP + " Gives $/M output tokens."),
    total_tok_s_per_gpu: float | None = typer.Option(None, "--total-tok-s-per-gpu",
                                                     help=opts.TOTAL_TOK_HELP.split(";")[0]
                                                     + "; gives $/M total tokens."),
    tok_s_per_gpu: float | None = typer.Option(None, "--tok-s-per-gpu", help=opts.OLD_TOK_HELP, hidden=True),
    utilization: float = typer.Option(DEFAULT_UTILIZATION, "--utilization", help=opts.U_HELP),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour", help="Override the tier rate."),
    joules_per_token: float | None = typer.Option(None, "--joules-per-token", help="Adds energy $/M tokens."),
    usd_per_kwh: float = typer.Option(0.08, "--usd-per-kwh", help="Electricity price for --joules-per-token."),
    pue: float | None = typer.Option(None, "--pue", help=opts.PUE_HELP),
    usd_per_cny: float | None = typer.Option(None, "--usd-per-cny", help="Override the configured rate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """$/M tokens for a GPU at a cost tier or owned TCO, at a given throughput and utilization.

    The tokens priced are the ones the throughput counts: --output-tok-s-per-gpu gives $/M output
    tokens, --total-tok-s-per-gpu $/M input + output tokens (no mix here to convert one into the other).
    """
    from bench.config.hardware import load_hardware
    from bench.econ import bounds
    from bench.econ import queries as q

    opts.require_finite(output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
                        tok_s_per_gpu=tok_s_per_gpu, utilization=utilization, usd_per_gpu_hour=usd_per_gpu_hour,
                        joules_per_token=joules_per_token, usd_per_kwh=usd_per_kwh, usd_per_cny=usd_per_cny, pue=pue)
    bounds.check_all(output_tok_s_per_gpu=output_tok_s_per_gpu, total_tok_s_per_gpu=total_tok_s_per_gpu,
                     utilization=utilization, usd_per_gpu_hour=usd_per_gpu_hour, joules_per_token=joules_per_token,
                     usd_per_kwh=usd_per_kwh, usd_per_cny=usd_per_cny, pue=pue)
    bounds.check("output_tok_s_per_gpu", tok_s_per_gpu, "--tok-s-per-gpu")
    given = [v for v in (output_tok_s_per_gpu, total_tok_s_per_gpu, tok_s_per_gpu) if v is not None]
    if len(given) != 1:
        raise UserInputError("give exactly one of --output-tok-s-per-gpu or --total-tok-s-per-gpu")
    tokens = "total" if total_tok_s_per_gpu is not None else "output"
    catalog = load_hardware()
    fx = q.usd_per_cny(catalog, usd_per_cny)
    rows = q.cost_rows(catalog, gpu, tier, given[0], utilization, usd_per_gpu_hour=usd_per_gpu_hour,
                       joules_per_token=joules_per_token, usd_per_kwh=usd_per_kwh, fx=fx, tokens=tokens, pue=pue)
    if json_out:
        print_json(rows)
    else:
        print_table(f"Cost per million {tokens} tokens at U = {utilization:g} (sources: --json)", rows,
                    [c for c in rows[0] if c not in ("source", "pue_source")])
    opts.print_notes(q.DEPRECATED_TOK_S_NOTE if tok_s_per_gpu is not None else None)
