"""``segcli report``: one self-contained HTML page (no script, nothing from a network), checked for
its content, and opened in a real headless browser when one is installed."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import segcli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def test_report_is_one_offline_page_with_configs_curves_classes_galleries_and_the_comparison(
    evaluated_runs, tmp_path
):
    runs = [evaluated_runs["short"], evaluated_runs["longer"]]
    r = segcli(
        "report",
        *map(str, runs),
        "-o",
        "out/report.html",
        "--resamples",
        "300",
        "--seed",
        "3",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower() and not re.search(
        r"""(src|href)=["']?(https?:)?//""", page
    )
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    alts = [a for a, _ in images]
    # curves, per-class bars, a confusion matrix per run, samples and a worst gallery per run
    assert (
        alts.count("samples") == 2 and alts.count("worst images") == 2 and "per-class IoU" in alts
    )
    assert (
        len([a for a in alts if a.startswith("confusion_")]) == 2
        and "loss and val mIoU per epoch" in alts
    )
    for _, data in images:  # every embedded picture decodes as an image
        import base64

        assert (
            cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
            is not None
        )
    # configs side by side: only what differs
    assert re.search(
        r"<td class=\"l\">trainer\.epochs</td><td class=\"l\">1</td><td class=\"l\">3</td>", page
    )
    assert '<td class="l">trainer.batch_size</td>' not in page
    # the comparison of their test evals
    assert "Comparison on the test split" in page and "2 test images, 300 paired resamples" in page
    for cls in ("a", "b", "c"):
        assert f"IoU {cls}</td>" in page
    # the comparison is segcli compare's, with A = the first run (its own eval's mIoU), same seed
    # and resamples
    r = segcli(
        "compare",
        *map(str, runs),
        "--resamples",
        "300",
        "--seed",
        "3",
        "--json",
        "c.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    expected = json.loads((tmp_path / "c.json").read_text())
    short = json.loads((runs[0] / "evals" / "best-test.json").read_text())["miou"]
    assert (
        expected["miou"]["a"] == pytest.approx(short, abs=1e-12)
        and expected["miou"]["difference"] != 0
    )
    header, table = comparison(page)
    assert header == (
        "A = trainer.epochs=1, B = trainer.epochs=3: 2 test images, 300 paired resamples (seed "
        "3). "
        f"mIoU: {expected['miou']['verdict']}."
    )
    assert table[0] == ["score", "A", "B", "B - A", "95% interval", "B higher in", "verdict"]
    scores = [
        ("mIoU", expected["miou"]),
        ("mDice", expected["mdice"]),
        *((f"IoU {c}", expected["per_class_iou"][c]) for c in ("a", "b", "c")),
    ]
    assert table[1:] == [
        [
            label,
            f"{d['a']:.4f}",
            f"{d['b']:.4f}",
            f"{d['difference']:+.4f}",
            f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]",
            f"{100 * d['b_better_share']:.1f}%",
            d["verdict"],
        ]
        for label, d in scores
    ]


def comparison(page: str) -> tuple[str, list[list[str]]]:
    """The report's comparison section: its first paragraph and its table's rows, as text."""
    section = page.split("<h2>Comparison on the test split</h2>", 1)[1].split("<h2>", 1)[0]

    def text(fragment: str) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()

    header = text(re.search(r"<p>(.*?)</p>", section).group(1))
    rows = [
        [text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", section)
    ]
    return header, rows


def test_report_of_several_runs_ranks_them_against_the_best_as_compare_does(
    evaluated_runs, tmp_path
):
    """Two copies of the short run with their test evals changed: "perfect" right on every pixel
    (the best), "half" right on image 0 only (short's image 1). Against the best, "half" ties in the
    resamples that draw image 0 twice (p 1/4 > 2.5%) and is lower in the others: its interval is [<
    0, 0], no difference detected; the trained runs are lower in every resample. The rows are
    compare's ranking."""
    from segcli.inference.evaluation import PerImage

    short = PerImage.load(evaluated_runs["short"] / "evals" / "best-test.npz").matrices
    right = np.stack([np.diag(m.sum(1)) for m in short])
    assert (short != right).any(axis=(1, 2)).all()  # one epoch: both images have wrong pixels
    copies = {}
    for name, matrices in (("perfect", right), ("half", np.stack([right[0], short[1]]))):
        copies[name] = tmp_path / name
        shutil.copytree(evaluated_runs["short"], copies[name])
        evidence = PerImage.load(copies[name] / "evals" / "best-test.npz")
        evidence.matrices = matrices
        evidence.save(copies[name] / "evals" / "best-test.npz")
    runs = [evaluated_runs["short"], evaluated_runs["longer"], copies["perfect"], copies["half"]]
    r = segcli(
        "report", *map(str, runs), "-o", "r.html", "--resamples", "400", "--seed", "2", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    r = segcli(
        "compare",
        *map(str, runs),
        "--resamples",
        "400",
        "--seed",
        "2",
        "--json",
        "rank.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    ranking = json.loads((tmp_path / "rank.json").read_text())["ranking"]
    assert ranking[0]["run"] == "perfect" and ranking[0]["miou"] == 1.0
    header, table = comparison((tmp_path / "r.html").read_text())
    assert (
        header
        == "4 runs on 2 test images, each against the best by a paired bootstrap (400 resamples)."
    )
    assert table[0] == ["run", "mIoU", "mDice", "mIoU - best", "95% interval", "verdict"]
    assert table[1] == ["perfect", "1.0000", "1.0000", "", "", "best"]
    rows = []
    for x in ranking[1:]:
        d = x["vs_best"]["miou"]
        assert d["a"] == 1.0 and d["b"] == pytest.approx(x["miou"])  # A = the best, B = the run
        rows.append(
            [
                x["run"],
                f"{x['miou']:.4f}",
                f"{x['mdice']:.4f}",
                f"{d['difference']:+.4f}",
                f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]",
                "worse than the best"
                if d["ci95"][1] < 0
                else "no difference from the best detected at 95%",
            ]
        )
    assert table[2:] == rows
    verdicts = {row[0]: row[-1] for row in table[2:]}
    longer = PerImage.load(evaluated_runs["longer"] / "evals" / "best-test.npz").matrices
    longer_ties = any(
        np.array_equal(m, np.diag(m.sum(1))) for m in longer
    )  # a perfect image: ties in 1/4
    assert verdicts == {
        "half": "no difference from the best detected at 95%",
        "short": "worse than the best",
        "longer": "no difference from the best detected at 95%"
        if longer_ties
        else "worse than the best",
    }
    assert [float(row[1]) for row in table[1:]] == sorted(
        (float(row[1]) for row in table[1:]), reverse=True
    )


@pytest.mark.skipif(
    not any(shutil.which(b) for b in BROWSERS), reason="no Chromium/Chrome installed"
)
def test_report_renders_in_a_headless_browser(evaluated_runs, tmp_path):
    browser = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    runs = [evaluated_runs["short"], evaluated_runs["longer"]]
    r = segcli("report", *map(str, runs), "-o", "report.html", "--resamples", "300", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shot = tmp_path / "shot.png"
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,3000",
            f"--screenshot={shot}",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    picture = cv2.imread(str(shot))
    assert picture.shape[:2] == (3000, 1280)
    # something was drawn: text, tables and the embedded plots make many non-white pixels of several
    # colours
    ink = (picture < 200).any(2)
    assert ink.mean() > 0.02
    assert len(np.unique(picture.reshape(-1, 3)[ink.reshape(-1)], axis=0)) > 50
    keep = Path(__file__).resolve().parents[2] / "outputs" / "report_screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)  # outputs/ is git-ignored: a copy to look at after the run
