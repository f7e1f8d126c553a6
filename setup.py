"""Build hook: ship the repo's configs/ inside the wheel as bench/_configs.

Why: configs/ (models, hardware, prices, roofline factors, example sweeps) is where users edit in a
checkout, and ARCHITECTURE keeps it at the top level; a non-editable `pip install .` must still find
it from any directory. bench.config.base.CONFIG_DIR prefers bench/_configs when it exists (an
installed wheel) and falls back to <repo>/configs (a checkout or an editable install), so the data
lives in one place in the repo and is copied only into build output, never into the source tree.
Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs read <repo>/configs directly
        target = Path(self.build_lib) / "bench" / "_configs"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CONFIGS, target, ignore=shutil.ignore_patterns("*.pyc", "__pycache__", ".*"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
