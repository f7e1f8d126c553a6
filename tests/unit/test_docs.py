"""The documentation (README.md, docs/, mkdocs.yml) stays true to the code it describes.

Checked here without building the site (`make docs` runs `mkdocs build --strict`, which fails on a
broken link or anchor; `make test` runs it): every `maas-bench <command> --flag` a page shows exists,
every module under bench/ is named on the architecture page, the README links only to pages that
exist, and the site's navigation lists every page. The results-schema table is checked against the
declared schema in tests/unit/sweep/test_rows.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml

from bench.cli.app import app

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
TEXTS = [REPO / "README.md", *PAGES]

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_INVOCATION = re.compile(r"maas-bench\s+([a-z][a-z-]*)((?:\s+\S+)*)")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _commands_shown(text: str) -> list[tuple[str, list[str]]]:
    """(command, flags) of every `maas-bench <command> ...` in a code block or an inline code span.

    In a code block a trailing backslash continues the command on the next line and `#` starts a comment.
    """
    snippets: list[str] = []
    in_block = False
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            line = pending + line.split("  #")[0].split(" # ")[0]
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            snippets.append(line)
        else:
            snippets += _CODE_SPAN.findall(line)
    shown = []
    for s in snippets:
        for m in _INVOCATION.finditer(s):
            shown.append((m.group(1), _FLAG.findall(m.group(2))))
    return shown


def _cli_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    global_opts = {o for p in group.params for o in (*p.opts, *p.secondary_opts)}
    return {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | global_opts | {"--help"}
            for name, cmd in group.commands.items()}


def test_the_docs_have_pages():
    names = {p.name for p in PAGES}
    assert {"index.md", "getting-started.md", "sweeps.md", "metrics.md", "results-schema.md", "economics.md",
            "planner.md", "engines.md", "reliability.md", "architecture.md"} <= names


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_and_flag_shown_exists(path):
    options = _cli_options()
    bad = []
    for command, flags in _commands_shown(path.read_text()):
        if command not in options:
            bad.append(f"maas-bench {command}: no such command")
            continue
        bad += [f"maas-bench {command} {f}: no such option" for f in flags if f not in options[command]]
    assert not bad, f"{path.name}: " + "; ".join(sorted(set(bad)))


def test_the_flag_check_catches_a_made_up_flag():
    shown = _commands_shown("x `maas-bench cost --gpu h100 --no-such-flag 1` y\n```bash\n"
                            "maas-bench plan --model m \\\n    --burst   # --not-this-one\n```\n")
    assert shown == [("cost", ["--gpu", "--no-such-flag"]), ("plan", ["--model", "--burst"])]
    assert "--no-such-flag" not in _cli_options()["cost"]


def test_every_bench_module_is_named_on_the_architecture_page():
    """Top-level modules as `bench/x.py`, layer packages as `bench/x/`, their modules and sub-packages
    (`name.py`, `sub/`) anywhere on the page (the layer table)."""
    bench = REPO / "bench"
    page = (DOCS / "architecture.md").read_text()
    missing = [f"bench/{m.name}" for m in sorted(bench.glob("*.py"))
               if m.name not in ("__init__.py", "__main__.py") and f"`bench/{m.name}`" not in page]
    for pkg in sorted(p for p in bench.iterdir() if (p / "__init__.py").exists()):
        if f"`bench/{pkg.name}/`" not in page:
            missing.append(f"bench/{pkg.name}/")
        for m in sorted(pkg.iterdir()):
            if m.suffix == ".py" and m.name != "__init__.py" and f"`{m.name}`" not in page:
                missing.append(f"bench/{pkg.name}/{m.name}")
            elif (m / "__init__.py").exists() and f"`{m.name}/`" not in page:
                missing.append(f"bench/{pkg.name}/{m.name}/")
    assert not missing, f"docs/architecture.md does not name {missing}: add them to its package table"


def test_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", (REPO / "README.md").read_text())
    assert links, "README.md links to no docs page"
    assert [x for x in links if not (REPO / x).is_file()] == []


def test_the_site_navigation_lists_every_page():
    def files(node):
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [f for n in node for f in files(n)]
        return [f for v in node.values() for f in files(v)]

    nav = files(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    assert sorted(nav) == sorted(p.name for p in PAGES)
