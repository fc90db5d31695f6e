#!/usr/bin/env bash
# A sweep as a plain shell loop: every model x loss x seed, one named run each.
# Copy it, edit the lists and the common settings, run it; run it again after a crash or Ctrl-C:
# finished runs are skipped (trainer.skip_if_done=true), unfinished ones resume from last.pt,
# the missing ones start. Each run's exit code is checked; failures are listed at the end and
# make the script exit 1. Two tables end it: every run, then one row per model x loss over its
# seeds (mean ± std, n): read a difference between two configs as real only when it is well
# beyond both standard deviations, or better, test it on the test images:
#   segcli eval outputs/sweep/unet_dice_ce_s0/checkpoints/best.pt --split test   (each run)
#   segcli compare outputs/sweep/unet_dice_ce_s0 outputs/sweep/unet_ce_s0        (paired bootstrap)
#
#   MODELS="unet fpn" LOSSES="dice_ce ce" SEEDS="0 1" bash examples/sweep.sh dataset=camvid dataset.root=data/camvid
#
# Extra arguments are passed to every run (e.g. trainer.max_minutes=10).
set -u
MODELS=${MODELS:-"unet fpn deeplabv3plus"}
LOSSES=${LOSSES:-"dice_ce ce"}
SEEDS=${SEEDS:-"0 1 2"}
SEGCLI=${SEGCLI:-segcli}

failed=()
for model in $MODELS; do
  for loss in $LOSSES; do
    for seed in $SEEDS; do
      name="sweep/${model}_${loss}_s${seed}"
      echo "== $name"
      $SEGCLI train "model=$model" "loss=$loss" "seed=$seed" "run.name=$name" trainer.skip_if_done=true "$@" > /dev/null
      code=$?
      if [ "$code" -ge 128 ]; then echo "interrupted"; exit "$code"; fi   # Ctrl-C/SIGTERM: stop the loop
      if [ "$code" -ne 0 ]; then failed+=("$name"); fi
    done
  done
done

$SEGCLI runs outputs/sweep --sort miou
$SEGCLI runs outputs/sweep --group-seeds
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
