"""Training from weak labels (``dataset.labels`` boxes/points/scribbles, or ``dataset.simulate``):
``WeakRounds`` writes each round's training masks (weak/pseudo.py) and trains a ``Trainer`` on them.

With ``weak.rounds=N`` (boxes only) the rounds are the EM idea of Papandreou et al. 2015 and the
recursive training of Khoreva et al. 2017: round 1 trains on the filled boxes; round r >= 2 trains
from scratch (same seed, same budget) on round r-1's prediction on the training images, kept inside
the boxes. Rounds 1..N-1 train in ``RUN/weak/round{r}/`` (run folders of their own), the last one
in ``RUN`` itself, so ``segcli eval RUN/checkpoints/best.pt`` scores the final model. Each round
starts, resumes or is skipped by its own folder's state (the rules of training/jobs.py: a round
folder holding a run of another config is refused), so the same command or ``segcli train
--resume RUN`` continues an interrupted run where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from segcli import console
from segcli.data.datasets import build_datasets
from segcli.errors import RunInterrupted, SegcliError
from segcli.runs.run_dir import RunDir
from segcli.training import distributed
from segcli.training.trainer import Trainer
from segcli.weak.pseudo import WeakLabels

#: config keys a resume may not change: they decide the training masks already made
FIXED_ON_RESUME = ("weak.", "dataset.labels", "dataset.weak_", "dataset.simulate", "dataset.back")


class PseudoMaskTrainer(Trainer):
    """A ``Trainer`` whose training split's masks are a folder of training masks (``masks``) over
    ``images`` (image files; None: the train split's own images). Arguments as ``Trainer``'s.

    Raises:
        SegcliError, RunInterrupted: as ``Trainer``'s.
    """

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
        SegcliError: bad weak-label settings or files (construction, see ``WeakLabels``), a resume
            that changes them, or what a round's ``Trainer`` raises.
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
        self.cfg, self.ddp, self.changes = cfg, ddp or distributed.Distributed(), changes
        self.run = RunDir(Path(run_path), writer=self.ddp.main)
        fixed = sorted(k for k in changes or {} if k.startswith(FIXED_ON_RESUME))
        if fixed:
            raise SegcliError(
                f"{fixed[0]}: a resume cannot change how the training masks are made; start a "
                "new run (another run.name or hydra.run.dir) instead"
            )
        self.labels = WeakLabels(cfg)

    def fit(self) -> dict:
        """Every round not done yet, in order (see the module docstring); the last round's
        summary.json dict.

        Raises:
            SegcliError, RunInterrupted: see the class.
        """
        rounds, summary = self.labels.weak.rounds, {}
        for r in range(1, rounds + 1):
            folder = self.run.weak_round(r)
            target = self.run.path if r == rounds else folder
            if r < rounds and self._finished(folder):
                continue
            masks = self._masks(r)
            if self.labels.kind != "boxes":
                self.labels.forget_labels()
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
            try:
                summary = trainer.fit()
            except RunInterrupted as stop:  # the round's folder is not what a user resumes
                raise RunInterrupted(
                    stop.exit_code,
                    f"weak-label round {r} of {rounds}: {stop}".replace(
                        f"--resume {target}", f"--resume {self.run.path}"
                    ),
                ) from None
        return summary

    def _finished(self, folder: Path) -> bool:
        """Whether round ``folder`` holds a finished run of this config.

        Raises:
            SegcliError: it holds a run of another config (training/jobs.py's rule)."""
        from segcli.training.jobs import FolderState, existing_run

        return existing_run(folder, self.cfg) is FolderState.DONE

    def _masks(self, r: int) -> Path:
        """Round ``r``'s masks folder, written by rank 0; the others wait for it and raise its
        error, if any."""
        folder, masks, error = self.run.weak_round(r), None, None
        if self.ddp.main:
            try:
                if r == 1:
                    masks = self.labels.first_round(folder)
                else:
                    best = RunDir.read(self.run.weak_round(r - 1)).best
                    masks = self.labels.next_round(folder, self.run.weak_round(1), best)
            except SegcliError as exc:
                error = str(exc)
        masks, error = self.ddp.broadcast((str(masks) if masks else None, error))
        if error:
            raise SegcliError(error)
        return Path(masks)
