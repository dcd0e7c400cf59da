#!/usr/bin/env bash
# Train the scenes64 candidate on a lent GPU in one call of the device tool, and bring its snapshots back.
#
# On the device (its python3 has torch; gantools runs in place):
#   TRAIN_SECONDS=420 KEEP=16000,18000,20000 bash benchmarks/device_scenes64.sh train
# Here, with the files that came back in DIR:
#   bash benchmarks/device_scenes64.sh join DIR OUTDIR
#
# train: `gantools train` with the candidate's recipe (docs/recipes.md: ngf 56, ndf 48, R1 1, EMA 0.995,
# 50,000 scenes of seed 0, batch 64) in float32 (--no-amp, as the CPU runs train), a snapshot every 1,000
# steps, for STEPS steps (default 20,000) or until TRAIN_SECONDS have passed, whichever comes first
# (then it is stopped as Ctrl-C stops it: checkpoint saved). Into $OUT go stats.jsonl, the last sample
# grid, the log, and up to three of the KEEP snapshots (default: the last three), packed in one tar
# and split in 15 MiB parts: the tool brings back at most 8 files of 16 MiB each, 64 MiB in all, and
# a snapshot of this width is 17.6 MB.
# join: rebuilds the snapshots from the parts, in OUTDIR/snapshots/, with stats.jsonl beside them;
# then `bash benchmarks/stage_scenes64.sh quick|full OUTDIR/snapshots/step_NNNNNN.safetensors STAGE`.
# SMOKE=1 trains a tiny model for a few steps on any machine, to check the script.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

case "${1:-}" in
train)
    out=${OUT:?OUT must name the folder that the device tool brings back}
    run=${RUN:-/tmp/scenes64-device}
    steps=${STEPS:-20000}
    recipe=(--data scenes --image-size 64 --ngf 56 --ndf 48 --data-n 50000 --r1 1 --ema 0.995
            --snapshot-every 1000 --checkpoint-every 1000 --sample-every 1000 --log-every 100)
    if [ "${SMOKE:-0}" = 1 ]; then
        recipe=(--data scenes --image-size 64 --ngf 8 --ndf 8 --data-n 256 --r1 1 --ema 0.995
                --snapshot-every 4 --checkpoint-every 4 --sample-every 4 --log-every 2)
        steps=${STEPS:-12}
    fi
    cd "$repo"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/device.txt" 2>&1 || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >> "$out/device.txt"
    resume=()
    [ -f "$run/checkpoint.pt" ] && resume=(--resume "$run")
    start=$SECONDS
    # SIGINT is Ctrl-C: the loop saves a checkpoint and exports the model before it stops.
    status=0
    timeout -s INT "${TRAIN_SECONDS:-420}" env PYTHONPATH="$repo" PYTHONUNBUFFERED=1 python3 -m gantools train \
        "${recipe[@]}" "${resume[@]}" --steps "$steps" --no-amp --out "$run" --quiet > "$out/train.log" 2>&1 || status=$?
    echo "train: exit $status after $((SECONDS - start)) s" >> "$out/train.log"
    cp "$run/stats.jsonl" "$out/"
    last_grid=$(ls "$run"/samples/*.png 2>/dev/null | tail -1 || true)
    [ -n "$last_grid" ] && cp "$last_grid" "$out/samples.png"
    if [ -n "${KEEP:-}" ]; then
        kept=()
        for s in ${KEEP//,/ }; do
            f=$(printf "snapshots/step_%06d.safetensors" "$s")
            [ -f "$run/$f" ] && kept+=("$f")
        done
    else
        mapfile -t kept < <(cd "$run" && ls snapshots/*.safetensors 2>/dev/null | tail -3)
    fi
    [ "${#kept[@]}" -le 3 ] || { echo "KEEP names more than 3 snapshots (64 MiB in all)" >> "$out/train.log"; exit 2; }
    if [ "${#kept[@]}" -gt 0 ]; then
        tar -C "$run" -cf - "${kept[@]}" | split -b 15M -d - "$out/snapshots.tar.part"
    fi
    ls -l "$out" >> "$out/train.log"
    ;;
join)
    [ $# -eq 3 ] || { echo "usage: bash benchmarks/device_scenes64.sh join DIR OUTDIR" >&2; exit 2; }
    mkdir -p "$3"
    cat "$2"/snapshots.tar.part* | tar -C "$3" -xf -
    cp "$2/stats.jsonl" "$3/"
    ls -l "$3/snapshots"
    ;;
*)
    echo "usage: bash benchmarks/device_scenes64.sh train | join DIR OUTDIR" >&2
    exit 2
    ;;
esac
