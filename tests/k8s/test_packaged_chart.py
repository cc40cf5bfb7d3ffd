"""The chart ships inside the featurizer package: an installed CLI renders its own version."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from featurizer.launch.k8s.render import PACKAGED_CHART, chart_path

from conftest import CHART, ROOT


def test_the_wheel_carries_the_chart_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("featurizer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {
            name.removeprefix("featurizer/chart/"): archive.read(name)
            for name in archive.namelist()
            if name.startswith("featurizer/chart/")
        }
    expected = {
        str(path.relative_to(CHART)): path.read_bytes()
        for path in CHART.rglob("*")
        if path.is_file()
    }
    assert packed == expected


def test_the_default_chart_is_the_packaged_one(monkeypatch) -> None:
    monkeypatch.delenv("FEATURIZER_CHART", raising=False)
    chart = chart_path()
    assert chart == PACKAGED_CHART and chart.parent.name == "featurizer"
    assert (chart / "Chart.yaml").read_bytes() == (CHART / "Chart.yaml").read_bytes()
