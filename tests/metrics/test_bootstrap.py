"""The paired bootstrap of ``segcli compare`` against hand-worked cases."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from helpers import segcli

from segcli.errors import SegcliError
from segcli.inference.evaluation import PerImage
from segcli.metrics.bootstrap import (
    check_same_images,
    paired_bootstrap,
    rank_against_best,
    resample_weights,
    scores_of_matrices,
)
from segcli.metrics.confusion import ConfusionMatrix

PERFECT = np.array([[2, 0], [0, 2]])


def test_scores_of_matrices_by_hand():
    # class 0: TP 3, FP 0, FN 1 -> IoU 3/4, Dice 6/7; class 1: TP 2, FP 1, FN 0 -> IoU 2/3, Dice
    # 4/5; class 2 absent from truth and prediction: NaN, left out of the means
    m = np.array([[[3, 1, 0], [0, 2, 0], [0, 0, 0]]])
    s = scores_of_matrices(m)
    assert s["iou"][0, :2] == pytest.approx([0.75, 2 / 3]) and np.isnan(s["iou"][0, 2])
    assert s["dice"][0, :2] == pytest.approx([6 / 7, 0.8])
    assert s["miou"][0] == pytest.approx((0.75 + 2 / 3) / 2) and s["mdice"][0] == pytest.approx(
        (6 / 7 + 0.8) / 2
    )


def test_scores_of_matrices_agree_with_segcli_eval_on_random_predictions():
    torch.manual_seed(0)
    target, pred = (
        torch.randint(0, 5, (3, 20, 20)),
        torch.randint(0, 4, (3, 20, 20)),
    )  # class 4 never predicted
    target[0, :5] = 255
    matrix = ConfusionMatrix(5, 255, per_image=True)
    matrix.update(pred, target)
    scores = matrix.compute()
    per_image = matrix.image_matrices_cpu().numpy()
    assert np.array_equal(per_image.sum(0), matrix.matrix.numpy())
    s = scores_of_matrices(per_image.sum(0, keepdims=True))
    assert s["miou"][0] == pytest.approx(scores.miou, abs=1e-12) and s["mdice"][0] == pytest.approx(
        scores.mdice, abs=1e-12
    )


def test_resample_weights_are_draws_with_replacement_and_seeded():
    w = resample_weights(3, 20000, seed=7)
    assert w.shape == (20000, 3) and (w.sum(1) == 3).all() and (w >= 0).all()
    # 3 images drawn 3 times: P(one image drawn 3 times) = 3 * (1/3)^3 = 1/9
    assert (w.max(1) == 3).mean() == pytest.approx(1 / 9, abs=0.01)
    assert np.array_equal(w, resample_weights(3, 20000, seed=7)) and not np.array_equal(
        w, resample_weights(3, 20000, 8)
    )
    with pytest.raises(SegcliError, match="at least one image"):
        resample_weights(0, 10, 0)


def test_two_images_hand_worked_interval():
    """Two images, so three kinds of resample: (2, 0) with p 1/4, (1, 1) with p 1/2, (0, 2) with p
    1/4. (2, 0): A = [[2,2],[0,4]] mIoU (1/2 + 2/3)/2 = 7/12, B perfect 1: B - A = +5/12. (0, 2): A
    perfect 1, B = [[4,0],[2,2]] mIoU (2/3 + 1/2)/2 = 7/12: B - A = -5/12. (1, 1): A = [[3,1],[0,4]]
    (3/4 + 4/5)/2 = 0.775, B = [[4,0],[1,3]] (4/5 + 3/4)/2 = 0.775: 0. Each extreme has p 1/4 >
    2.5%, so the interval is exactly [-5/12, +5/12]; B higher in 1/4 of the resamples, ties (1/2)
    count half: share 1/2."""
    a = np.stack([[[1, 1], [0, 2]], PERFECT])
    b = np.stack([PERFECT, [[2, 0], [1, 1]]])
    r = paired_bootstrap(a, b, resamples=20000, seed=1)
    m = r["miou"]
    assert (
        m.a == pytest.approx(0.775)
        and m.b == pytest.approx(0.775)
        and m.difference == pytest.approx(0)
    )
    assert m.low == pytest.approx(-5 / 12) and m.high == pytest.approx(5 / 12)
    assert m.b_better_share == pytest.approx(0.5, abs=0.01)
    assert m.verdict == "no difference detected at 95%"


def test_identical_runs_have_the_interval_zero_zero():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, (3, 4, 4))
    r = paired_bootstrap(a, a.copy(), resamples=500, seed=0, class_names=["w", "x", "y", "z"])
    for d in (r["miou"], r["mdice"], *r["per_class_iou"].values()):
        assert (d.low, d.high) == (0.0, 0.0) and d.b_better_share == 0.5
        assert d.verdict == "no difference detected at 95%"
    assert list(r["per_class_iou"]) == ["w", "x", "y", "z"]


def test_a_dominating_run_never_flips():
    """B is right on every pixel of each of 3 images, A is wrong on some pixels of each image: B is
    higher in every resample, both ways round."""
    a = np.stack([[[2, 1], [0, 3]], [[4, 0], [2, 1]], [[1, 1], [1, 1]]])
    b = np.stack([np.diag(x.sum(1)) for x in a])  # the same truth, all predicted right
    r = paired_bootstrap(a, b, resamples=2000, seed=3)
    assert r["miou"].b_better_share == 1.0 and r["miou"].low > 0 and r["miou"].verdict == "B better"
    assert r["miou"].b == 1.0 and r["mdice"].verdict == "B better"
    swapped = paired_bootstrap(b, a, resamples=2000, seed=3)
    assert swapped["miou"].b_better_share == 0.0 and swapped["miou"].verdict == "A better"
    assert swapped["miou"].high == pytest.approx(-r["miou"].low)


def test_seeded_resampling_is_reproducible():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 30, (10, 3, 3)), rng.integers(0, 30, (10, 3, 3))
    one, two = paired_bootstrap(a, b, 1000, seed=5), paired_bootstrap(a, b, 1000, seed=5)
    assert one["miou"] == two["miou"] and one["per_class_iou"] == two["per_class_iou"]
    other = paired_bootstrap(a, b, 1000, seed=6)
    assert other["miou"].low != one["miou"].low
    chunked = paired_bootstrap(a, b, 1000, seed=5, chunk=7)  # computed in pieces: the same numbers
    assert chunked["miou"].low == pytest.approx(one["miou"].low, abs=1e-12)


def test_ranking_puts_the_best_first_and_tests_the_others_against_it():
    a = np.stack([[[2, 1], [0, 3]], [[4, 0], [2, 1]], [[1, 1], [1, 1]]])
    best = np.stack([np.diag(x.sum(1)) for x in a])
    r = rank_against_best(["a", "best", "same"], [a, best, best.copy()], resamples=500, seed=0)
    assert r["best"] == "best" and [x["run"] for x in r["ranking"]] == ["best", "same", "a"]
    rows = {x["run"]: x for x in r["ranking"]}
    assert rows["best"]["vs_best"] is None
    assert rows["a"]["vs_best"]["miou"].high < 0 and rows["same"]["vs_best"]["miou"].high == 0.0


def test_runs_on_other_images_are_refused_naming_the_first_difference():
    with pytest.raises(
        SegcliError,
        match=r"^A and B were not scored on the same images: image 2 is y in A and z in B$",
    ):
        check_same_images(["A", "B"], [["x", "y"], ["x", "z"]], [["c"], ["c"]])
    with pytest.raises(SegcliError, match="2 vs 3 images"):
        check_same_images(["A", "B"], [["x", "y"], ["x", "y", "z"]], [["c"], ["c"]])
    with pytest.raises(SegcliError, match="different classes"):
        check_same_images(["A", "B"], [["x"], ["x"]], [["c", "d"], ["c"]])
    with pytest.raises(SegcliError, match=r"\(N, C, C\)"):
        paired_bootstrap(np.zeros((2, 2, 2)), np.zeros((3, 2, 2)))


def test_eval_keeps_per_image_matrices_and_compare_reads_them(evaluated_runs, tmp_path):
    runs = {name: evaluated_runs[name] for name in ("short", "longer")}
    segnet_root = evaluated_runs["root"]
    # no eval yet (a copy without evals/): with --no-eval compare runs no model and says which
    # command makes one
    bare = tmp_path / "bare"
    shutil.copytree(runs["short"], bare, ignore=shutil.ignore_patterns("evals"))
    r = segcli("compare", str(bare), str(runs["longer"]), "--no-eval", cwd=tmp_path)
    assert (
        r.returncode == 2
        and "no eval of checkpoints/best.pt on the test split yet; run: segcli eval " in r.stderr
    )
    assert not (bare / "evals").exists()
    # by default it evaluates the run itself (as segcli eval would), says so in one line and
    # keeps the eval in RUN/evals/; the next compare reuses it; a stale one is evaluated again
    best_epoch = json.loads((bare / "summary.json").read_text())["best_epoch"]
    said = f"{bare}: evaluated checkpoints/best.pt (epoch {best_epoch}) on the test split, "
    said += "2 images in "
    compare_bare = ("compare", str(bare), str(runs["longer"]), "--resamples", "200")
    r = segcli(*compare_bare, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert said in r.stdout and r.stdout.count("evaluated checkpoints/best.pt") == 1
    kept = PerImage.load(bare / "evals" / "best-test.npz")
    assert (bare / "evals" / "best-test.json").is_file() and kept.epoch == best_epoch
    assert np.array_equal(
        kept.matrices, PerImage.load(runs["short"] / "evals" / "best-test.npz").matrices
    )  # what segcli eval of the same checkpoint kept
    r = segcli(*compare_bare, cwd=tmp_path)
    assert r.returncode == 0 and "evaluated" not in r.stdout
    kept.epoch = best_epoch + 5  # an eval of another best epoch than best.pt's now
    kept.save(bare / "evals" / "best-test.npz")
    r = segcli(*compare_bare, cwd=tmp_path)
    assert r.returncode == 0 and said in r.stdout
    assert PerImage.load(bare / "evals" / "best-test.npz").epoch == best_epoch
    shutil.rmtree(bare / "evals")
    r = segcli("eval", str(bare / "checkpoints" / "best.pt"), "--split", "test", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (
        f"wrote {bare / 'evals' / 'best-test.json'} and {bare / 'evals' / 'best-test.npz'}"
        in r.stdout
    )

    evals = {}
    for name, run in runs.items():
        evals[name] = json.loads((run / "evals" / "best-test.json").read_text())
        evidence = PerImage.load(run / "evals" / "best-test.npz")
        assert (
            evidence.names == ["test0", "test1"]
            and evidence.split == "test"
            and evidence.class_names == ["a", "b", "c"]
        )
        assert evidence.matrices.shape == (2, 3, 3) and evidence.matrices.dtype == np.int64
        assert evidence.matrices.sum() == 2 * 48 * 80  # every pixel of both 48x80 test images, once
        assert evidence.matrices[0].sum() == evidence.matrices[1].sum() == 48 * 80
        assert scores_of_matrices(evidence.matrices.sum(0, keepdims=True))["miou"][
            0
        ] == pytest.approx(evals[name]["miou"], abs=1e-12)
    assert np.array_equal(
        PerImage.load(bare / "evals" / "best-test.npz").matrices,
        PerImage.load(runs["short"] / "evals" / "best-test.npz").matrices,
    )  # the same model again

    r = segcli(
        "compare",
        str(runs["short"]),
        str(runs["longer"]),
        "--resamples",
        "2000",
        "--json",
        "c.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["labels"] == ["short", "longer"] and out["images"] == 2 and out["resamples"] == 2000
    miou = out["miou"]
    assert miou["a"] == pytest.approx(evals["short"]["miou"]) and miou["b"] == pytest.approx(
        evals["longer"]["miou"]
    )
    assert miou["difference"] == pytest.approx(evals["longer"]["miou"] - evals["short"]["miou"])
    assert miou["ci95"][0] <= miou["ci95"][1] and miou["verdict"] in r.stdout
    assert set(out["per_class_iou"]) == {"a", "b", "c"} and "IoU a" in r.stdout
    assert r.stdout.count("A = short, B = longer: test split, 2 images") == 1

    # --json of an eval: the .npz goes beside it, and compare takes it; three inputs: ranked against
    # the best
    r = segcli(
        "eval",
        str(bare / "checkpoints" / "best.pt"),
        "--split",
        "test",
        "--json",
        "short.json",
        cwd=tmp_path,
    )  # the copy: the shared fixture's files stay as they are
    assert r.returncode == 0 and (tmp_path / "short.npz").is_file()
    r = segcli(
        "compare",
        str(runs["short"]),
        str(runs["longer"]),
        "short.json",
        "--resamples",
        "500",
        "--json",
        "rank.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    ranking = json.loads((tmp_path / "rank.json").read_text())["ranking"]
    assert len(ranking) == 3 and ranking[0]["vs_best"] is None
    assert ranking[0]["miou"] == pytest.approx(max(evals["short"]["miou"], evals["longer"]["miou"]))

    # the two worst images (the fixture's --worst 2), drawn: a caption strip, then image | truth |
    # prediction | errors of the padded 64x96 sample, for each
    worst = json.loads((runs["short"] / "evals" / "best-test.json").read_text())["worst_images"]
    evidence = PerImage.load(runs["short"] / "evals" / "best-test.npz")
    per_image = scores_of_matrices(evidence.matrices)["miou"]
    assert [w["miou"] for w in worst] == pytest.approx(sorted(per_image))
    name = evidence.names[int(per_image.argmin())]
    assert worst[0]["name"] == name and len(worst[0]["worst_classes"]) <= 3
    gallery = cv2.cvtColor(
        cv2.imread(str(runs["short"] / "evals" / "best-test-worst.png")), cv2.COLOR_BGR2RGB
    )
    assert gallery.shape == (2 * (22 + 64 + 4), 4 * 96, 3)
    truth = cv2.imread(str(segnet_root / "testannot" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    r = segcli(
        "predict",
        str(segnet_root / "test" / f"{name}.jpg"),
        "-c",
        str(runs["short"] / "checkpoints" / "best.pt"),
        "-o",
        "pred",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    pred = cv2.imread(str(tmp_path / "pred" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    errors = gallery[22 : 22 + 48, 3 * 96 : 3 * 96 + 80]
    wrong = pred != truth
    assert wrong.any()  # one epoch: some pixels are wrong, so the next line checks something
    assert np.array_equal(
        errors[wrong], colors[truth[wrong]]
    )  # wrong pixels: the true class's colour
    assert (errors[~wrong].max(1) <= 0.35 * 255 + 1).all()  # right ones: dim gray
    assert np.array_equal(gallery[22 : 22 + 48, 96 : 96 + 80], colors[truth])  # the truth panel

    # another split, another image set: refused with one line
    r = segcli(
        "eval",
        str(bare / "checkpoints" / "best.pt"),
        "--split",
        "val",
        "--json",
        "val.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = segcli("compare", "short.json", "val.json", cwd=tmp_path)
    assert r.returncode == 2 and "an eval of the val split, not test (--split val?)" in r.stderr
    r = segcli(
        "compare", str(runs["short"]), "val.json", "--split", "val", "--no-eval", cwd=tmp_path
    )  # --no-eval: the shared fixture's run stays as it is
    assert r.returncode == 2 and "no eval of checkpoints/best.pt on the val split yet" in r.stderr


def test_group_seeds_by_hand():
    from segcli.reports.runs_table import group_seeds

    def record(name, seed, lr, miou):
        return {
            "name": name,
            "params": {"seed": seed, "optimizer.lr": lr, "loss": "dice"},
            "miou": miou,
            "mdice": None if miou is None else miou + 0.1,
            "status": "done" if miou is not None else "killed",
        }

    records = [
        record("a0", "0", "0.001", 0.40),
        record("a1", "1", "0.001", 0.42),
        record("a2", "2", "0.001", 0.47),
        record("b0", "0", "0.01", 0.30),
        record("b1", "1", "0.01", None),
    ]
    groups = group_seeds(records, ["optimizer.lr", "seed"])
    assert [g["overrides"] for g in groups] == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    a, b = groups
    # mean 0.43; deviations -0.03, -0.01, +0.04: sample variance (0.0009 + 0.0001 + 0.0016) / 2 =
    # 0.0013
    assert a["n"] == 3 and a["seeds"] == "0 1 2" and a["miou_mean"] == pytest.approx(0.43)
    assert a["miou_std"] == pytest.approx(0.0013**0.5) and a["mdice_mean"] == pytest.approx(0.53)
    assert b["n"] == 1 and b["miou_mean"] == pytest.approx(0.30) and b["miou_std"] is None
    assert [r["name"] for r in b["runs"]] == ["b0", "b1"] and b["runs"][1]["status"] == "killed"


def test_the_interval_is_the_2_5th_to_97_5th_percentile_in_a_hand_worked_case():
    """Four images, B perfect on all of them, A perfect on three and wrong on one pixel-pair of
    image 0. A resample holds image 0 k times, k ~ Binomial(4, 1/4): P(k) = .316, .422, .211, .047,
    .004, so P(k <= 2) = .949 < 97.5% < P(k <= 3) = .996: the 97.5th percentile is the k = 3
    difference (the 80th would be k = 2's). With k copies A sums to [[8-k, k], [0, 8]]: IoU (8-k)/8
    and 8/(8+k), Dice (16-2k)/(16-k) and 16/(16+k); B's scores are 1."""
    a = np.stack([[[1, 1], [0, 2]], PERFECT, PERFECT, PERFECT])
    b = np.stack([PERFECT] * 4)

    def miou_gap(k):
        return 1 - ((8 - k) / 8 + 8 / (8 + k)) / 2

    def mdice_gap(k):
        return 1 - ((16 - 2 * k) / (16 - k) + 16 / (16 + k)) / 2

    r = paired_bootstrap(a, b, resamples=20000, seed=4)
    assert miou_gap(3) == pytest.approx(0.3238636, abs=1e-6) and miou_gap(2) == pytest.approx(0.225)
    assert (r["miou"].low, r["miou"].high) == (0.0, pytest.approx(miou_gap(3), abs=1e-12))
    assert (r["mdice"].low, r["mdice"].high) == (0.0, pytest.approx(mdice_gap(3), abs=1e-12))
    # B is higher whenever image 0 is drawn (1 - (3/4)^4 of the resamples), a tie otherwise (counts
    # half)
    assert r["miou"].b_better_share == pytest.approx(1 - 0.75**4 / 2, abs=0.01)
    swapped = paired_bootstrap(b, a, resamples=20000, seed=4)  # the lower end: the 2.5th percentile
    assert (swapped["miou"].low, swapped["miou"].high) == (
        pytest.approx(-miou_gap(3), abs=1e-12),
        0.0,
    )


def _percentile(sorted_values: np.ndarray, q: float) -> float:
    """The q-th percentile by linear interpolation between the order statistics (numpy's
    default)."""
    position = q / 100 * (len(sorted_values) - 1)
    below = int(np.floor(position))
    above = min(below + 1, len(sorted_values) - 1)
    return float(
        sorted_values[below] + (position - below) * (sorted_values[above] - sorted_values[below])
    )


def _miou_by_hand(matrix: np.ndarray) -> float:
    ious = []
    for c in range(matrix.shape[0]):
        tp, union = matrix[c, c], matrix[c, :].sum() + matrix[:, c].sum() - matrix[c, c]
        if union > 0:  # a class absent from truth and prediction is left out of the mean
            ious.append(tp / union)
    return float(np.mean(ious))


def test_the_interval_matches_an_independent_percentile_of_the_same_resamples():
    """The same resamples (resample_weights, the same seed), each side summed and scored by hand,
    the differences sorted: low and high are their 2.5th and 97.5th percentiles, not any other
    pair."""
    rng = np.random.default_rng(11)
    a, b = rng.integers(0, 40, (10, 3, 3)), rng.integers(0, 40, (10, 3, 3))
    a[:, 2, :] = 0  # class 2 rare in truth: the resamples' scores spread out
    resamples, seed = 2000, 9
    weights = resample_weights(10, resamples, seed)
    gaps = np.sort(
        [
            _miou_by_hand(np.tensordot(w, b, 1)) - _miou_by_hand(np.tensordot(w, a, 1))
            for w in weights
        ]
    )
    r = paired_bootstrap(a, b, resamples=resamples, seed=seed)["miou"]
    assert r.low == pytest.approx(_percentile(gaps, 2.5), abs=1e-12)
    assert r.high == pytest.approx(_percentile(gaps, 97.5), abs=1e-12)
    assert (
        _percentile(gaps, 20) - _percentile(gaps, 2.5) > 0.01
    )  # the check tells the two levels apart
    assert r.b_better_share == pytest.approx(
        ((gaps > 0).sum() + 0.5 * (gaps == 0).sum()) / resamples
    )
