"""Training from weak labels (``dataset.labels`` boxes/points/scribbles, or ``dataset.simulate``):
``WeakRounds`` writes each round's training masks (weak/pseudo.py) and trains a ``Trainer`` on them.

With ``weak.rounds=N`` (boxes only) the rounds are the EM idea of Papandreou et al. 2015 and the
recursive training of Khoreva et al. 2017: round 1 trains on the filled boxes; round r >= 2 trains
from scratch (same seed, same budget) on round r-1's prediction on the training images, kept inside
the boxes. Rounds 1..N-1 train in ``RUN/weak/round{r}/`` (run folders of their own), the last one
in ``RUN`` itself, so ``segcli eval RUN/checkpoints/best.pt`` scores the final model. Each round
starts, resumes or is skipped by its own folder's state (the rules of training/jobs.py), so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from segcli import console
from segcli.data.datasets import build_datasets
from segcli.runs.run_dir import RunDir
from segcli.training import distributed
from segcli.training.trainer import Trainer
from segcli.weak.pseudo import WeakLabels


class PseudoMaskTrainer(Trainer):
    """A ``Trainer`` whose training split's masks are a folder of training masks (``masks``) over
    ``images`` (image files; None: the train split's own images). Arguments as ``Trainer``'s."""

    def __init__(
        self,
        cfg: dict,
        run_path: Path,
        masks: Path,
        images: list[Path] | None,
        ddp: distributed.Distributed | None = None,
        resume: bool = False,
        changes: dict | None = None,
    ) -> None:
        self.train_masks, self.train_images = masks, images
        super().__init__(cfg, run_path, ddp, resume, changes)

    def _build_datasets(self) -> tuple:
        write = self.run.write_split if self.run.writer else None
        return build_datasets(
            self.cfg,
            ("train", "val"),
            self.seed,
            write,
            train_masks=self.train_masks,
            train_images=self.train_images,
        )


class WeakRounds:
    """The rounds of a weak-label run in ``run_path`` (see the module docstring; arguments as
    ``Trainer``'s); ``.fit()`` returns the last round's summary.json dict.

    Raises:
        SegcliError: bad weak-label settings or files (construction, see ``WeakLabels``), or what a
            round's ``Trainer`` raises.
        RunInterrupted: SIGINT/SIGTERM; the round's last.pt is kept and the run resumes from it.
    """

    def __init__(
        self,
        cfg: dict,
        run_path: Path,
        ddp: distributed.Distributed | None = None,
        resume: bool = False,
        changes: dict | None = None,
    ) -> None:
        self.cfg, self.run = cfg, RunDir(Path(run_path))
        self.ddp, self.changes = ddp or distributed.Distributed(), changes
        self.labels = WeakLabels(cfg)

    def fit(self) -> dict:
        rounds, summary = self.labels.weak.rounds, {}
        for r in range(1, rounds + 1):
            folder = self.run.weak_round(r)
            target = self.run.path if r == rounds else folder
            if r < rounds and RunDir.read(folder).done():
                continue
            masks = self._masks(r)
            if rounds > 1:
                console.out.print(
                    f"segcli: weak-label round {r} of {rounds}: training masks in {masks}",
                    highlight=False,
                )
            trainer = PseudoMaskTrainer(
                self.cfg,
                target,
                masks,
                self.labels.images.paths,
                self.ddp,
                resume=RunDir.read(target).last.is_file(),
                changes=self.changes,
            )
            summary = trainer.fit()
        return summary

    def _masks(self, r: int) -> Path:
        """Round ``r``'s masks folder, written by rank 0 (the others wait for it)."""
        folder, masks = self.run.weak_round(r), None
        if self.ddp.main:
            if r == 1:
                masks = self.labels.first_round(folder)
            else:
                best = RunDir.read(self.run.weak_round(r - 1)).best
                masks = self.labels.next_round(folder, self.run.weak_round(1), best)
        return Path(self.ddp.broadcast(str(masks) if masks else None))
