"""Named unit conversions: the one home of every 1e3, 1e6, 1e9, 3600 and 2**30 in bench/.

Why: a bare `/ 1e6` reads the same whether it turns nanoseconds into milliseconds, tokens into
millions of tokens or watts into megawatts; a name says which, so a wrong factor is a review catch
instead of a silent 1000x error in a row or a price. The constants keep the exact float values the
bare literals had (division by 1e3 and by 1000.0 is the same operation), and each helper is the
one expression it replaces, so results stay bit-identical.

Imports nothing from bench: every layer may use it (bottom of the table with errors and atomic).
"""

from __future__ import annotations

# --- time -------------------------------------------------------------------------------------
MS_PER_S = 1e3
US_PER_S = 1e6
S_PER_US = 1e-6  # the planner multiplies by it (x * 1e-6 is not bit-identical to x / 1e6)
NS_PER_MS = 1e6
NS_PER_S = 1e9
SECONDS_PER_HOUR = 3600.0
HOURS_PER_YEAR = 8760.0
HOURS_PER_MONTH = HOURS_PER_YEAR / 12  # 730: the month used for every monthly figure

# --- counts -----------------------------------------------------------------------------------
TOKENS_PER_M = 1e6  # $/M tokens: prices and costs are per million tokens
PER_MILLION = 1e6  # any "per million" (W per MW, ...)
PER_BILLION = 1e9  # parameter counts in billions
MILLI_PER_UNIT = 1e3  # mW per W, mJ per J

# --- bytes, bandwidth, compute ------------------------------------------------------------------
BYTES_PER_KIB = 1024
BYTES_PER_GIB = 2.0**30
BYTES_PER_GB = 1e9  # decimal gigabyte: NVML memory figures, GB/s bandwidths
FLOPS_PER_TFLOPS = 1e12

# --- energy -----------------------------------------------------------------------------------
JOULES_PER_KWH = 3.6e6


def ms_to_s(ms: float) -> float:
    return ms / MS_PER_S


def s_to_ms(s: float) -> float:
    return s * MS_PER_S


def us_to_s(us: float) -> float:
    """Microseconds as seconds: `us * 1e-6`, the planner's form."""
    return us * S_PER_US


def ns_to_s(ns: float) -> float:
    return ns / NS_PER_S


def ns_to_ms(ns: float) -> float:
    return ns / NS_PER_MS


def s_to_ns(s: float) -> int:
    """Whole nanoseconds (truncated, as `int(s * 1e9)`): offsets added to perf_counter_ns() times."""
    return int(s * NS_PER_S)


def ms_to_ns(ms: float) -> int:
    """Whole nanoseconds (truncated, as `int(ms * 1e6)`)."""
    return int(ms * NS_PER_MS)


def from_milli(x: float) -> float:
    """mW -> W, mJ -> J (NVML reports milli-units)."""
    return x / MILLI_PER_UNIT


def per_million(x: float) -> float:
    """`x` counted in millions (tokens -> M tokens, W -> MW)."""
    return x / PER_MILLION


def in_billions(x: float) -> float:
    """A count (of parameters) in billions."""
    return x / PER_BILLION


def bytes_to_kib(n: float) -> float:
    return n / BYTES_PER_KIB


def bytes_to_gib(n: float) -> float:
    return n / BYTES_PER_GIB


def bytes_to_gb(n: float) -> float:
    """Decimal gigabytes (1 GB = 1e9 bytes)."""
    return n / BYTES_PER_GB


def gb_s_to_bytes_s(gb_s: float) -> float:
    """A bandwidth in GB/s (decimal) as bytes/s."""
    return gb_s * BYTES_PER_GB


def tflops_to_flops(tflops: float) -> float:
    return tflops * FLOPS_PER_TFLOPS
