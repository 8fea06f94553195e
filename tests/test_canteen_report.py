"""The HTML report renders, with its charts decoded, in headless Chromium (Debian's chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from meterd.cli import main
from simulators.canteen_truth import generate, write_site
from simulators.local_servers import InfluxServer

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# Writes each image's decoded width into the DOM, so --dump-dom shows whether charts decoded.
PROBE = ("<script>window.addEventListener('load', () => { for (const img of document.images) "
         "{ img.setAttribute('data-natural-width', String(img.naturalWidth)); } });</script>")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def report(tmp_path: Path, influxd: InfluxServer) -> Path:
    site = generate(4242, 2, step_s=3 * 3600, influx_url=influxd.url)
    write_site(influxd.url, site)
    cfg = tmp_path / "meterd.toml"
    cfg.write_text(site.config_toml)
    (tmp_path / "activity.csv").write_text(site.activity_csv)
    assert main(["activity", "import", "-c", str(cfg), str(tmp_path / "activity.csv")]) == 0
    assert main(["canteens", "-c", str(cfg), "--month", "2026-03", "--html",
                 str(tmp_path / "out")]) == 0
    (page,) = (tmp_path / "out").glob("canteens-*.html")
    return page


def test_report_is_self_contained_with_every_section(report: Path) -> None:
    page = report.read_text()
    assert page.count("src='data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"]https?:", page)
    for heading in ("Ranking", "Savings and indicators", "Data quality and model",
                    "median of canteens", "CUSUM of savings"):
        assert heading in page, heading
    assert "canteen-a" in page and "canteen-b" in page


def test_report_renders_in_headless_chromium(tmp_path: Path, report: Path) -> None:
    shot = tmp_path / "shot.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                    "--hide-scrollbars", report.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    # Not blank: many distinct colours (charts, table borders, text), not a uniform page.
    assert pixels.std() > 0.05
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50

    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    run = _chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", probed.as_uri())
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', run.stdout)]
    assert len(widths) == 2, run.stderr[-2000:]
    assert all(w > 300 for w in widths), widths
