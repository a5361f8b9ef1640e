"""The built wheel carries the console script and the shipped profiles."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_console_script_and_profiles(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("quota-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]" in text and "quota = quota.cli.main:main" in text
    shipped = sorted(p.name for p in (ROOT / "profiles").glob("*.json"))
    in_wheel = sorted(Path(n).name for n in names if n.startswith("quota/profiles/") and n.endswith(".json"))
    assert in_wheel == shipped
    for package in ("quant", "kernels", "models", "runtime", "profiling", "solvers", "eval", "cli"):
        assert f"quota/{package}/__init__.py" in names
