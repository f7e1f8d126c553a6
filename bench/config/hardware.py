"""The GPU catalog and cost rates (configs/hardware.yaml).

Cost and margin numbers are only as good as their inputs, so every $/GPU-hour carries a source and a
date, money is tagged with its currency, and CNY becomes USD only through the exchange rate written in
configs/hardware.yaml (never a live lookup).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from bench.config.base import StrictModel, load_config
from bench.errors import UserInputError

CURRENCIES = ("USD", "CNY")
# The usual tier names (others allowed). SemiAnalysis' InferenceX constants are OWNING costs at a
# hyperscaler (costh) and at a neocloud giant (costn), and a 3-year RENTAL contract (costr); none of
# them is what an on-demand rental costs, hence the names.
RENTAL_TIERS = ("owning-hyperscaler", "owning-neocloud", "rental-3yr", "on-demand")
# Old names that misread owning costs as rental rates: still accepted, with a one-line note.
DEPRECATED_TIER_ALIASES = {"hyperscaler": "owning-hyperscaler", "neocloud": "owning-neocloud",
                           "reserved": "rental-3yr"}
DEFAULT_TIER = "owning-neocloud"
TCO_TIER = "tco"  # the pseudo-tier meaning "owned hardware, priced by the TCO model"
DATE_PATTERN = r"^\d{4}(-\d{2}(-\d{2})?)?$"  # YYYY-MM-DD, or coarser when the source is
SOURCE_DATE_PATTERN = r"^(\d{4}(-\d{2}(-\d{2})?)?|undated)$"
_alias_noted: set[str] = set()


def deprecated_tier_note(tier: str) -> str | None:
    """The one-line deprecation note for an old tier name (None for a current name)."""
    new = DEPRECATED_TIER_ALIASES.get(tier)
    return None if new is None else f"tier {tier!r} is deprecated (it is an owning cost or a 3-year rental, " \
        f"not an on-demand price); use {new!r}"


PENDING_NOTES: list[str] = []  # deprecation notes for the CLI to print (stderr) once a command succeeds


def _note_alias_once(tier: str) -> None:
    """Queue the deprecation note once per name per process; the CLI prints it on stderr after a
    successful command (a failing one prints only its one error line)."""
    note = deprecated_tier_note(tier)
    if note and tier not in _alias_noted:
        _alias_noted.add(tier)
        PENDING_NOTES.append(note)


class ExchangeRates(StrictModel):
    """The one CNY->USD rate used everywhere; None means converting CNY is an error."""

    usd_per_cny: float | None = Field(None, gt=0)
    as_of: str | None = Field(None, pattern=DATE_PATTERN)
    source_date: str | None = Field(None, pattern=SOURCE_DATE_PATTERN)
    source: str = ""


def convert_to_usd(amount: float, currency: str, usd_per_cny: float | None, what: str = "amount") -> float:
    """Convert `amount` in `currency` to USD; CNY without an explicit rate is a UserInputError."""
    if currency == "USD":
        return float(amount)
    if currency == "CNY":
        if usd_per_cny is None:
            raise UserInputError(
                f"{what} is in CNY but no exchange rate is set; set exchange_rates.usd_per_cny in "
                "configs/hardware.yaml (or pass --usd-per-cny); mixing USD and CNY needs an explicit rate"
            )
        if usd_per_cny <= 0:
            raise UserInputError(f"usd_per_cny must be > 0 (got {usd_per_cny})")
        return float(amount) * usd_per_cny
    raise UserInputError(f"currency must be one of {', '.join(CURRENCIES)} (got {currency!r})")


class RentalTier(StrictModel):
    """A rented GPU-hour at a named tier, with where the number came from."""

    usd_per_gpu_hour: float = Field(..., gt=0)
    source: str
    as_of: str = Field(..., pattern=DATE_PATTERN, description="date recorded here")
    source_date: str | None = Field(None, pattern=SOURCE_DATE_PATTERN,
                                    description="date the source shows, or 'undated'")
    note: str = ""


class TcoSpec(StrictModel):
    """Owned hardware: capex amortized over years (less residual), energy and hosting, per GPU-hour.

    Each money field names its currency (`capex_usd` or `capex_cny`, ...), give one of each pair.
    `kw_all_in` is the power drawn per GPU including its share of host and network; `pue` is applied
    on top (set 1.0 when `kw_all_in` is already a facility-level figure).
    """

    capex_usd: float | None = Field(None, gt=0)
    capex_cny: float | None = Field(None, gt=0)
    amortization_years: float = Field(..., gt=0)
    residual_fraction: float = Field(0.0, ge=0, lt=1)
    cost_of_capital_rate: float = Field(0.0, ge=0, lt=1, description="annual; 0 = straight-line")
    kw_all_in: float = Field(..., gt=0)
    pue: float = Field(1.0, ge=1)
    usd_per_kwh: float | None = Field(None, ge=0)
    cny_per_kwh: float | None = Field(None, ge=0)
    hosting_usd_per_gpu_hour: float | None = Field(None, ge=0)
    hosting_cny_per_gpu_hour: float | None = Field(None, ge=0)
    source: str = ""
    as_of: str | None = Field(None, pattern=DATE_PATTERN)
    source_date: str | None = Field(None, pattern=SOURCE_DATE_PATTERN)

    @model_validator(mode="after")
    def _one_of_each(self) -> TcoSpec:
        for usd, cny in (("capex_usd", "capex_cny"), ("usd_per_kwh", "cny_per_kwh"),
                         ("hosting_usd_per_gpu_hour", "hosting_cny_per_gpu_hour")):
            if (getattr(self, usd) is None) == (getattr(self, cny) is None):
                raise ValueError(f"give exactly one of {usd} or {cny}")
        return self

    def _usd(self, field_usd: str, field_cny: str, usd_per_cny: float | None) -> float:
        v = getattr(self, field_usd)
        if v is not None:
            return float(v)
        return convert_to_usd(getattr(self, field_cny), "CNY", usd_per_cny, what=f"tco.{field_cny}")

    def usd_inputs(self, usd_per_cny: float | None = None) -> dict[str, float]:
        """The TCO inputs in USD (CNY fields converted at the explicit rate), named as the arguments
        of bench.econ.cost.tco_usd_per_gpu_hour, which holds the formula (config holds data only)."""
        return {
            "capex_usd": self._usd("capex_usd", "capex_cny", usd_per_cny),
            "amortization_years": self.amortization_years,
            "residual_fraction": self.residual_fraction,
            "kw_all_in": self.kw_all_in,
            "pue": self.pue,
            "usd_per_kwh": self._usd("usd_per_kwh", "cny_per_kwh", usd_per_cny),
            "hosting_usd_per_gpu_hour": self._usd("hosting_usd_per_gpu_hour", "hosting_cny_per_gpu_hour",
                                                  usd_per_cny),
            "cost_of_capital_rate": self.cost_of_capital_rate,
        }


class GpuSpec(StrictModel):
    """One accelerator: peak specs (vendor datasheets) and what an hour of it costs."""

    name: str
    memory_gb: float = Field(..., gt=0)
    hbm_gb_s: float = Field(..., gt=0, description="memory bandwidth, GB/s (DDR for the CPU stand-in)")
    tflops_bf16: float | None = Field(None, gt=0)
    tflops_fp8: float | None = Field(None, gt=0)
    tflops_int8: float | None = Field(None, gt=0)
    tflops_fp4: float | None = Field(None, gt=0)
    tdp_w: float | None = Field(None, gt=0)
    interconnect_gb_s: float | None = Field(None, gt=0, description="per GPU, one direction")
    interconnect_source: str = ""
    is_cpu_standin: bool = False
    notes: str = ""
    tiers: dict[str, RentalTier] = Field(default_factory=dict)
    tco: TcoSpec | None = None

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, v: dict[str, RentalTier]) -> dict[str, RentalTier]:
        if TCO_TIER in v:
            raise ValueError(f"'{TCO_TIER}' is reserved for owned hardware; put it under `tco:`")
        return v

    def cost_tiers(self) -> list[str]:
        """Every tier this GPU can be priced at: its rental tiers, then 'tco' when it has a TCO model."""
        return list(self.tiers) + ([TCO_TIER] if self.tco is not None else [])


class HardwareCatalog(StrictModel):
    """configs/hardware.yaml: the exchange rate and the GPU catalog."""

    exchange_rates: ExchangeRates = ExchangeRates()
    gpus: dict[str, GpuSpec]

    def gpu(self, gpu_id: str) -> GpuSpec:
        if gpu_id not in self.gpus:
            raise UserInputError(f"gpu: unknown GPU {gpu_id!r}; allowed: {', '.join(self.gpus)}")
        return self.gpus[gpu_id]

    def canonical_tier(self, gpu_id: str, tier: str) -> str:
        """The GPU's tier named `tier`, a deprecated alias mapped to its new name (with a note on
        stderr); a name the GPU lacks is a UserInputError listing its tiers."""
        spec = self.gpu(gpu_id)
        allowed = spec.cost_tiers()
        if tier not in allowed and DEPRECATED_TIER_ALIASES.get(tier) in allowed:
            _note_alias_once(tier)
            tier = DEPRECATED_TIER_ALIASES[tier]
        if tier not in allowed:
            hint = ", ".join(allowed) if allowed else "none known; give --usd-per-gpu-hour"
            raise UserInputError(f"tier: unknown tier {tier!r} for gpu {gpu_id!r}; allowed: {hint}")
        return tier

    def default_tier(self, gpu_id: str) -> tuple[str, str | None]:
        """The tier used when none is named: DEFAULT_TIER, else the GPU's first cost tier; with a note
        saying so when it is not DEFAULT_TIER (so an estimate and a fleet plan price the same hour)."""
        allowed = self.gpu(gpu_id).cost_tiers()
        if DEFAULT_TIER in allowed:
            return DEFAULT_TIER, None
        if not allowed:
            raise UserInputError(f"tier: gpu {gpu_id!r} has no cost tiers; allowed: give --usd-per-gpu-hour")
        return allowed[0], f"gpu {gpu_id!r} has no {DEFAULT_TIER!r} tier; priced at {allowed[0]!r} " \
                           f"(its tiers: {', '.join(allowed)}; choose with --tier)"


def load_hardware(path: str | Path | None = None) -> HardwareCatalog:
    """configs/hardware.yaml with the user's hardware.yaml (--config-dir) layered over it, GPUs by id;
    or the one file `path`. Problems become a one-line UserInputError."""
    return load_config("hardware.yaml", HardwareCatalog, keyed=("gpus",), path=path,
                       shape="a hardware file must be a YAML mapping with keys exchange_rates, gpus")
