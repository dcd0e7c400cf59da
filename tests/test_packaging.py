"""A non-editable install works outside the checkout: the wheel holds every module and shipped model.

The wheel is built from a copy of the source tree (so no build/ or egg-info lands in the checkout),
installed without dependencies into a fresh venv that borrows this interpreter's torch, and run
from another directory, where the checkout's `pretrained/` cannot be seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def _pip(python: Path | str, *args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    subprocess.run([str(python), "-m", "pip", "-q", *args], cwd=cwd, env=env, check=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    _pip(sys.executable, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(source), cwd=work)
    (built,) = (work / "dist").glob("gantools-*.whl")
    return built


def test_wheel_holds_every_module_and_model(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gantools").rglob("*.py")}
    assert modules and not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"
    models = {"gantools/" + p.relative_to(ROOT).as_posix() for pattern in ("*.safetensors", "*.json")
              for p in (ROOT / "pretrained").rglob(pattern)}
    assert models and not models - names, f"models missing from the wheel: {sorted(models - names)}"


def test_installed_wheel_finds_the_shipped_models(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _pip(sys.executable, "install", "--no-deps", "--target", str(_site_packages(python)), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import gantools, gantools.models as m; g = m.load_model('scenes64'); "
              "print(gantools.__file__); print(m.pretrained_dir()); print(g.config.image_size)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GANTOOLS_PRETRAINED")}
    out = subprocess.run([str(python), "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    module_file, pretrained, size = out.stdout.split()
    assert Path(module_file).is_relative_to(env_dir), f"imported the checkout, not the wheel: {module_file}"
    assert Path(pretrained).is_relative_to(env_dir) and size == "64"


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())
