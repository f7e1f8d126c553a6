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


# The figures of a GPU entry that `figure_sources` may name (each one's source, entry by entry).
FIGURE_FIELDS = ("memory_gb", "hbm_gb_s", "tflops_bf16", "tflops_fp8", "tflops_int8", "tflops_fp6", "tflops_fp4",
                 "tdp_w", "interconnect_gb_s", "scale_up_gpus", "scale_up_latency_us", "scale_out_gb_s",
                 "scale_out_latency_us")


class _GpuFields(StrictModel):
    """What every catalog entry has but its memory (GpuSpec requires it, PendingGpuSpec may lack it)."""

    name: str
    tflops_bf16: float | None = Field(None, gt=0)
    tflops_fp8: float | None = Field(None, gt=0)
    tflops_int8: float | None = Field(None, gt=0)
    tflops_fp6: float | None = Field(None, gt=0, description="dense FP6 TFLOPS, where the vendor publishes one "
                                                             "(AMD CDNA 4); no code path uses it yet")
    tflops_fp4: float | None = Field(None, gt=0)
    tdp_w: float | None = Field(None, gt=0)
    interconnect_gb_s: float | None = Field(None, gt=0, description="per GPU, one direction")
    interconnect_source: str = ""
    # A rack-scale system (GB200 / GB300 NVL72) has one NVLink domain of 72 GPUs, not the 8 of an HGX
    # board: tensor / expert parallelism can span all of them at `interconnect_gb_s`. None = not
    # recorded (read: the 8-GPU board of configs/roofline.yaml `gpus_per_node`).
    scale_up_gpus: int | None = Field(None, gt=0, description="GPUs in one scale-up (NVLink / Infinity Fabric) domain")
    # Past the scale-up domain traffic goes over the NICs (InfiniBand / Ethernet), per GPU, one direction.
    scale_out_gb_s: float | None = Field(None, gt=0,
                                         description="per GPU scale-out (NIC) bandwidth, GB/s, one direction")
    # Fixed cost of ONE GPU-to-GPU transfer (software included, as a KV-cache hand-off pays it), on top of
    # bytes / bandwidth: inside the scale-up domain and across the scale-out network. None = not recorded
    # (readers fall back to configs/roofline.yaml collective_latency_us / inter_node_latency_us).
    scale_up_latency_us: float | None = Field(None, ge=0, description="one transfer inside the scale-up domain, us")
    scale_out_latency_us: float | None = Field(None, ge=0, description="one transfer over the scale-out network, us")
    # A GPU never measured takes its efficiencies (per_gpu factors, calibration, kernel curves of
    # configs/roofline.yaml) from the nearest measured GPU of its vendor and generation, said in every
    # estimate's notes and with a wider error band (bench.planner.factors.efficiency_for).
    efficiency_from: str | None = Field(None, description="catalog GPU id whose efficiencies this GPU inherits")
    # Where each figure came from, figure by figure (newer entries; older ones cite the file header).
    figure_sources: dict[str, str] = Field(default_factory=dict)
    figures_as_of: str | None = Field(None, pattern=DATE_PATTERN, description="date the figures were recorded here")
    is_cpu_standin: bool = False
    # A CPU's last-level cache: when one step's working set (the weights and the KV it reads) fits, the
    # step streams it from the cache, not from DRAM (a tiny twin's 14 MB on a 32 MiB L3). A GPU's L2 is
    # far smaller than its weights, so GPUs leave these unset and always stream from HBM.
    llc_mb: float | None = Field(None, gt=0, description="last-level cache, MiB (CPUs)")
    llc_gb_s: float | None = Field(None, gt=0, description="last-level cache read bandwidth, GB/s (CPUs)")
    notes: str = ""
    tiers: dict[str, RentalTier] = Field(default_factory=dict)
    tco: TcoSpec | None = None

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, v: dict[str, RentalTier]) -> dict[str, RentalTier]:
        if TCO_TIER in v:
            raise ValueError(f"'{TCO_TIER}' is reserved for owned hardware; put it under `tco:`")
        return v

    @field_validator("figure_sources")
    @classmethod
    def _figure_names(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(FIGURE_FIELDS))
        if unknown:
            raise ValueError(f"figure_sources: unknown figure(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(FIGURE_FIELDS)}")
        return v

    def cost_tiers(self) -> list[str]:
        """Every tier this GPU can be priced at: its rental tiers, then 'tco' when it has a TCO model."""
        return list(self.tiers) + ([TCO_TIER] if self.tco is not None else [])

    def figures(self) -> dict[str, float | int | None]:
        """The entry's figures by name (FIGURE_FIELDS), None where not recorded."""
        return {f: getattr(self, f) for f in FIGURE_FIELDS}

    @property
    def scale_up_gb_s(self) -> float | None:
        """Per-GPU scale-up bandwidth, one direction: the same figure as `interconnect_gb_s` (one field
        holds it; this name reads alongside scale_up_gpus / scale_out_gb_s)."""
        return self.interconnect_gb_s


class GpuSpec(_GpuFields):
    """One accelerator: peak specs (vendor datasheets) and what an hour of it costs."""

    memory_gb: float = Field(..., gt=0)
    hbm_gb_s: float = Field(..., gt=0, description="memory bandwidth, GB/s (DDR for the CPU stand-in)")


class PendingGpuSpec(_GpuFields):
    """A GPU the catalog names but cannot plan with yet: its HBM capacity or bandwidth has no checked
    source recorded (the planner needs both). Every figure it does have carries its source; `notes`
    says what is missing. `HardwareCatalog.gpu` refuses it with one line, so nothing downstream ever
    sees a None memory; giving the entry under `gpus:` (your own hardware.yaml) makes it usable."""

    memory_gb: float | None = Field(None, gt=0)
    hbm_gb_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _says_why(self) -> PendingGpuSpec:
        if not self.notes.strip():
            raise ValueError("a pending GPU needs `notes` saying which figures are missing and why")
        return self

    def missing(self) -> list[str]:
        """The figures the planner needs that this entry lacks."""
        return [f for f in ("memory_gb", "hbm_gb_s") if getattr(self, f) is None]


class HardwareCatalog(StrictModel):
    """configs/hardware.yaml: the exchange rate, the GPU catalog, and the GPUs named but not usable yet."""

    exchange_rates: ExchangeRates = ExchangeRates()
    gpus: dict[str, GpuSpec]
    pending_gpus: dict[str, PendingGpuSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _efficiency_parents(self) -> HardwareCatalog:
        for gid, g in self.gpus.items():
            parent = g.efficiency_from
            if parent is None:
                continue
            if parent == gid or parent not in self.gpus:
                others = ", ".join(k for k in self.gpus if k != gid)
                raise ValueError(f"gpus.{gid}.efficiency_from: {parent!r} is not another GPU of the catalog; "
                                 f"allowed: {others}")
            if self.gpus[parent].efficiency_from is not None:
                raise ValueError(f"gpus.{gid}.efficiency_from: {parent!r} itself inherits from "
                                 f"{self.gpus[parent].efficiency_from!r}; name the GPU that has the efficiencies")
        return self

    def gpu(self, gpu_id: str) -> GpuSpec:
        if gpu_id in self.gpus:
            return self.gpus[gpu_id]
        if gpu_id in self.pending_gpus:
            p = self.pending_gpus[gpu_id]
            raise UserInputError(
                f"gpu: {gpu_id!r} ({p.name}) is listed under pending_gpus in configs/hardware.yaml: no checked "
                f"source for its {' and '.join(p.missing())} yet; give them under gpus: in your own hardware.yaml "
                f"(--config-dir) to use it")
        raise UserInputError(f"gpu: unknown GPU {gpu_id!r}; allowed: {', '.join(self.gpus)}")

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
    return load_config("hardware.yaml", HardwareCatalog, keyed=("gpus", "pending_gpus"), path=path,
                       shape="a hardware file must be a YAML mapping with keys exchange_rates, gpus, "
                             "pending_gpus")
