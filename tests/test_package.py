"""The package's public face: ``import agroml`` is cheap, every public name loads, ``python -m agroml`` runs."""

from __future__ import annotations

import subprocess
import sys

import agroml


def test_every_public_name_loads() -> None:
    for name in agroml.__all__:
        assert getattr(agroml, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        agroml.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("agroml.no_such_thing did not raise")


def test_import_agroml_loads_no_heavy_package() -> None:
    code = "import sys, agroml; print(sorted(m for m in ('pandas', 'tensorflow', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_agroml() -> None:
    done = subprocess.run([sys.executable, "-m", "agroml", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"agroml {agroml.__version__}"
