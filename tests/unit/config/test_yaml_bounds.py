"""Issue 25 A: every YAML file is bounded when it is read (bench.config.base.read_yaml): its size, its
size once aliases are expanded (an alias bomb) and its nesting depth. Past a bound: one line naming the
file and the limit, exit 2, nothing written, within seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.config.base import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, read_yaml
from bench.errors import UserInputError
from tests.unit.cli.bad_sweeps import BASE

MAAS_BENCH = Path(sys.executable).with_name("maas-bench")


def alias_bomb() -> str:
    """'billion laughs': 9 levels of anchors, each a list of 9 aliases of the one before (9**10 strings)."""
    lines = ["name: bad", "server:", "  model: glm-4.5-tiny",
             "  extra: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def deep_list(levels: int) -> str:
    return "name: bad\nx: " + "[" * levels + "]" * levels + "\n"


def _cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([str(MAAS_BENCH), *args], capture_output=True, text=True, timeout=60)
    return r, time.monotonic() - t0


def _assert_one_line_exit_2(r: subprocess.CompletedProcess[str], took: float, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr + r.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert took < 30, f"took {took:.1f} s"  # an alias bomb expanded for minutes; a refusal is a process start
    return lines[0]


@pytest.mark.parametrize("case,text,limit", [
    ("alias bomb", alias_bomb(), "MAX_YAML_NODES"),
    ("5000-deep list", deep_list(5000), "MAX_YAML_DEPTH"),
    ("oversized file", None, "MAX_YAML_BYTES"),
])
def test_cli_run_refuses_a_yaml_past_its_bounds(tmp_path, case, text, limit):
    cfg = tmp_path / "sweep.yaml"
    if text is None:  # valid YAML (one long comment line after a real sweep), just too big
        cfg.write_text(yaml.safe_dump(BASE) + "#" + "x" * MAX_YAML_BYTES + "\n")
    else:
        cfg.write_text(text)
    if case == "alias bomb":
        assert cfg.stat().st_size < 1000
    out = tmp_path / "out"
    out.mkdir()
    r, took = _cli("run", str(cfg), "--out", str(out))
    _assert_one_line_exit_2(r, took, str(cfg), limit)
    assert list(out.rglob("*")) == [], "nothing written"


def test_config_dir_file_past_the_depth_bound_is_one_line(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "hardware.yaml").write_text("gpus: " + "[" * 5000 + "]" * 5000 + "\n")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    out.mkdir()
    r, took = _cli("--config-dir", str(user), "run", str(cfg), "--out", str(out))
    _assert_one_line_exit_2(r, took, str(user / "hardware.yaml"), "MAX_YAML_DEPTH")
    assert list(out.rglob("*")) == []


def test_the_bomb_is_small_and_refused_fast(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(alias_bomb())
    assert p.stat().st_size < 1000
    t0 = time.monotonic()
    with pytest.raises(UserInputError, match=r"bomb\.yaml: more than 1,000,000 values once aliases are expanded"):
        read_yaml(p)
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("text,fragment", [
    # each anchor well under the depth bound, but aliases nest them past it
    ("a: &a " + "[" * 60 + "]" * 60 + "\nb: [" + "[" * 50 + "*a" + "]" * 50 + "]\n", "once aliases are expanded"),
    ("a: &a [1, *a]\n", "refers to a value that contains it"),  # a recursive document
    ("- " * (MAX_YAML_DEPTH + 1) + "x\n", f"nested deeper than {MAX_YAML_DEPTH} levels"),  # block style
])
def test_depth_through_aliases_and_recursion_are_refused(tmp_path, text, fragment):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(UserInputError, match=fragment):
        read_yaml(p)


def test_within_the_bounds_aliases_and_nesting_still_load(tmp_path):
    p = tmp_path / "ok.yaml"
    depth = MAX_YAML_DEPTH - 2  # the mapping and key "x" take one level, the lists the rest
    p.write_text("base: &b {gpu: h100, n: 2}\nother: *b\nx: " + "[" * depth + "1" + "]" * depth + "\n")
    data = read_yaml(p)
    assert data["other"] == {"gpu": "h100", "n": 2}
    inner = data["x"]
    for _ in range(depth):
        inner = inner[0]
    assert inner == 1


def test_node_bound_counts_expanded_values(tmp_path):
    # 1000 aliases of a 1000-item list: 1e6 items once expanded (plus the lists), just past the bound
    p = tmp_path / "wide.yaml"
    p.write_text("a: &a [" + ", ".join(["0"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 1000) + "]\n")
    assert MAX_YAML_NODES < 1000 * 1000 + 1000
    with pytest.raises(UserInputError, match="MAX_YAML_NODES"):
        read_yaml(p)
    p.write_text("a: &a [" + ", ".join(["0"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 900) + "]\n")
    assert len(read_yaml(p)["b"]) == 900
