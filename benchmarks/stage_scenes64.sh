#!/usr/bin/env bash
# Stage a scenes64 candidate (a training snapshot) beside the repository and measure it as issue 17 asks.
#
#   bash benchmarks/stage_scenes64.sh quick SNAPSHOT OUT   # quick card: a first look during training
#   bash benchmarks/stage_scenes64.sh full  SNAPSHOT OUT   # everything pretrained/README.md reports
#
# full builds OUT/pretrained/scenes64/ exactly as pretrained/README.md's commands build the shipped
# folder (the snapshot as model.safetensors, the shipped segmenter, a new encoder, dissection.json
# with its causal ranking), then measures it with GANTOOLS_PRETRAINED=OUT/pretrained, so that every
# command and benchmark sees the candidate under the name scenes64. Results land in OUT/out/:
# card.md and card.json (against the shipped model as the baseline), encoder_start.json,
# restoration.json, edit.json, paint.json, and each step's log. Nothing in the repository changes;
# shipping is copying OUT/pretrained/scenes64/* into pretrained/scenes64/.
#
# quick writes OUT/out/quick.md and quick.json: N = 1,000 for shares and dissection, causal ranking on
# 100 samples, ablation on 200, joint choice among each concept's 20 best single units.
# SMOKE=1 shrinks every N to a few samples, to check the pipeline in minutes rather than hours.
# THREADS=N: torch threads for every step (default: torch's own).
# RESTORE_BESIDE=1 (full only): restoration, the longest step (about 46 minutes), runs on one thread in
# the background from the moment the encoder exists, beside the other steps, rather than last.
set -euo pipefail

usage() { echo "usage: bash benchmarks/stage_scenes64.sh quick|full SNAPSHOT OUT" >&2; exit 2; }
[ $# -eq 3 ] || usage
mode=$1
snapshot=$(realpath "$2")
stage=$(realpath -m "$3")
[ "$mode" = quick ] || [ "$mode" = full ] || usage
[ -f "$snapshot" ] || { echo "error: no snapshot file $snapshot" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
gantools=(python -m gantools)
# THREADS: torch reads OMP_NUM_THREADS when it starts, in every command and benchmark alike.
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS=$THREADS
mkdir -p "$stage/out"
out=$stage/out

# The sizes of every measurement: the card's own defaults, or a few samples for a smoke test.
if [ "${SMOKE:-0}" = 1 ]; then
    card_n=64; dissect_n=64; rank_n=8; ablate_n=16; enc_steps=5; restore=(--n 2 --steps 5 --restarts 1
    --ttq-n 2 --throughput-n 2 --throughput-steps 2 --encoder-steps 5); start=(--n 2 --steps 10)
    edit=(--n 2 --steps 5 --restarts 1 --dissect-n 64); paint=(--n 1 --doors 2)
else
    card_n=2000; dissect_n=2000; rank_n=200; ablate_n=500; enc_steps=800; restore=(--n 50); start=()
    edit=(--n 20); paint=()
fi

step() {  # step NAME COMMAND...: run one measurement, its output in out/NAME.log, its time in the log
    local name=$1; shift
    echo "$(date -u +%H:%M:%S) $name: $*" | tee -a "$out/stage.log"
    local t0=$SECONDS
    "$@" > "$out/$name.log" 2>&1 || { echo "error: $name failed, see $out/$name.log" >&2; exit 1; }
    echo "$(date -u +%H:%M:%S) $name: done in $((SECONDS - t0)) s" | tee -a "$out/stage.log"
}

cd "$repo"
segmenter=$repo/pretrained/scenes64/segmenter.safetensors
if [ "$mode" = quick ]; then
    quick_n=$([ "${SMOKE:-0}" = 1 ] && echo 64 || echo 1000)
    quick_rank=$([ "${SMOKE:-0}" = 1 ] && echo 8 || echo 100)
    quick_ablate=$([ "${SMOKE:-0}" = 1 ] && echo 16 || echo 200)
    step quick python benchmarks/model_card.py --model "$snapshot" --segmenter "$segmenter" --n "$quick_n" \
        --dissect-n "$quick_n" --ablate-n "$quick_ablate" --rank-n "$quick_rank" --greedy-pool 20 \
        --json "$out/quick.json"
    cp "$out/quick.log" "$out/quick.md"
    exit 0
fi

folder=$stage/pretrained/scenes64
mkdir -p "$folder"
cp "$snapshot" "$folder/model.safetensors"
cp "$segmenter" "$folder/segmenter.safetensors"
export GANTOOLS_PRETRAINED=$stage/pretrained

step encoder "${gantools[@]}" encoder train --model scenes64 --data scenes --steps "$enc_steps" -b 32 -q
restore_step=(step restoration python benchmarks/restoration.py --model scenes64 --layerwise 2 "${restore[@]}"
    --json "$out/restoration.json")
restoration_pid=
if [ "${RESTORE_BESIDE:-0}" = 1 ]; then
    (export OMP_NUM_THREADS=1; "${restore_step[@]}") &
    restoration_pid=$!
fi
step dissect "${gantools[@]}" dissect --model scenes64 --layer 3 -n "$dissect_n" --seed 1 --out "$stage/layer3" -q
step rank "${gantools[@]}" rank --model scenes64 --layer 3 --concept all --report "$stage/layer3" -n "$rank_n" \
    --seed 2 -q
cp "$stage/layer3/report.json" "$folder/dissection.json"

step card python benchmarks/model_card.py --model scenes64 --baseline "$repo/pretrained/scenes64/model.safetensors" \
    --n "$card_n" --dissect-n "$dissect_n" --rank-n "$rank_n" --ablate-n "$ablate_n" --greedy-pool 20 \
    --json "$out/card.json"
cp "$out/card.log" "$out/card.md"
step encoder_start python benchmarks/encoder_start.py --models scenes64 "${start[@]}" \
    --json "$out/encoder_start.json"
step edit python benchmarks/edit.py --shipped "${edit[@]}" --json "$out/edit.json"
step paint python benchmarks/paint.py "${paint[@]}" --json "$out/paint.json"
if [ -n "$restoration_pid" ]; then
    wait "$restoration_pid" || exit 1  # its own step() has said what failed
else
    "${restore_step[@]}"
fi
echo "staged: $folder; results: $out" | tee -a "$out/stage.log"
