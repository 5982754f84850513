"""Builds put the shipped students (``adapters/``) inside the package, so a plain ``pip install .`` has them
(``duomem.settings.adapters_dir`` finds them there). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStudents(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "adapters"
        if source.is_dir():
            shutil.copytree(source, Path(self.build_lib) / "duomem" / "adapters", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithStudents})
