"""The release configuration, linted here although only Linux x86-64 wheels
can be built on this machine: pyproject.toml against the published schemas
(PEP 621, scikit-build-core, cibuildwheel; validate-pyproject with its
schema store), and cibuildwheel's own reading of it for every platform it
is meant to build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_BUILDS = {
    "linux": {"cp312-manylinux_x86_64", "cp312-manylinux_aarch64"},
    "macos": {"cp312-macosx_x86_64", "cp312-macosx_arm64"},
    "windows": {"cp312-win_amd64"},
}


def test_pyproject_is_valid_against_the_schemas():
    from validate_pyproject import api, plugins

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    validator = api.Validator(plugins.list_from_entry_points())
    validator(config)  # raises ValidationError naming the bad key
    assert {"cibuildwheel", "scikit-build"} <= set(config["tool"])


def test_a_misspelt_key_is_caught():
    """The linter really reads the tool tables (it cannot pass vacuously)."""
    from validate_pyproject import api, errors, plugins

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    config["tool"]["cibuildwheel"]["test-comand"] = "true"
    with pytest.raises(errors.ValidationError, match="test-comand"):
        api.Validator(plugins.list_from_entry_points())(config)


@pytest.mark.parametrize("platform", sorted(EXPECTED_BUILDS))
def test_cibuildwheel_builds_one_py3_wheel_per_arch(platform, tmp_path):
    res = subprocess.run([sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", platform,
                          str(ROOT)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert set(res.stdout.split()) == EXPECTED_BUILDS[platform]


def test_version_has_one_source():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["scikit-build"]["metadata"]["version"]["input"] == "python/nld_cpp/__init__.py"
