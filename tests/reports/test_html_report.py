"""``segcli report``: one self-contained HTML page (no script, nothing from a network), checked for
its content, and opened in a real headless browser when one is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import segcli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def test_report_is_one_offline_page_with_configs_curves_classes_galleries_and_the_comparison(evaluated_runs, tmp_path):
    runs = [evaluated_runs["short"], evaluated_runs["longer"]]
    r = segcli("report", *map(str, runs), "-o", "out/report.html", "--resamples", "300", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower() and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    alts = [a for a, _ in images]
    # curves, per-class bars, a confusion matrix per run, samples and a worst gallery per run
    assert alts.count("samples") == 2 and alts.count("worst images") == 2 and "per-class IoU" in alts
    assert len([a for a in alts if a.startswith("confusion_")]) == 2 and "loss and val mIoU per epoch" in alts
    for _, data in images:  # every embedded picture decodes as an image
        import base64
        assert cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR) is not None
    # configs side by side: only what differs
    assert re.search(r"<td class=\"l\">trainer\.epochs</td><td class=\"l\">1</td><td class=\"l\">3</td>", page)
    assert "<td class=\"l\">trainer.batch_size</td>" not in page
    # the comparison of their test evals
    assert "Comparison on the test split" in page and "2 test images, 300 paired resamples" in page
    assert re.search(r"<b>mIoU: (B better|A better|no difference detected at 95%)</b>", page)
    for cls in ("a", "b", "c"):
        assert f"IoU {cls}</td>" in page


def test_report_without_evals_says_which_command_makes_them(evaluated_runs, tmp_path):
    run = evaluated_runs["short"]  # evaluated on test only
    r = segcli("report", str(run), str(evaluated_runs["longer"]), "--split", "val", "-o", "r.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "No comparison: " in page and "no eval of checkpoints/best.pt on the val split yet; run: segcli eval" in page
    assert f"segcli eval {run / 'checkpoints' / 'best.pt'} --split val --worst 8</code> draws one" in page
    r = segcli("report", str(tmp_path), "-o", "r.html", cwd=tmp_path)
    assert r.returncode == 2 and "not a run folder" in r.stderr


@pytest.mark.skipif(not any(shutil.which(b) for b in BROWSERS), reason="no Chromium/Chrome installed")
def test_report_renders_in_a_headless_browser(evaluated_runs, tmp_path):
    browser = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    runs = [evaluated_runs["short"], evaluated_runs["longer"]]
    r = segcli("report", *map(str, runs), "-o", "report.html", "--resamples", "300", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shot = tmp_path / "shot.png"
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1280,3000", f"--screenshot={shot}", (tmp_path / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    picture = cv2.imread(str(shot))
    assert picture.shape[:2] == (3000, 1280)
    # something was drawn: text, tables and the embedded plots make many non-white pixels of several colours
    ink = (picture < 200).any(2)
    assert ink.mean() > 0.02
    assert len(np.unique(picture.reshape(-1, 3)[ink.reshape(-1)], axis=0)) > 50
    keep = Path(__file__).resolve().parents[2] / "outputs" / "report_screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)  # outputs/ is git-ignored: a copy to look at after the run
