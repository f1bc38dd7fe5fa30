#!/usr/bin/env bash
# The GPU checklist: measures on a GPU what docs/benchmarks.md lists as "not measured yet".
# It runs on a machine with a GPU and no network, after scripts/fetch-device-wheels.sh on a
# machine with one:
#   bash scripts/fetch-device-wheels.sh     # with network: fills .whl/ and .gpu-data/
#   # copy the checkout, .whl/ and .gpu-data/ included, to the GPU machine; there:
#   bash scripts/gpu-checks.sh
# Each check has its own time limit; results are written to $OUT/results.jsonl (one JSON
# object per check: name, seconds, exit code, and the command's JSON output) and $OUT/log.txt.
# OUT (default /tmp/gpu-checks), SITE (where the wheels are installed, default /tmp/site)
# and DV_HOME (default /tmp/dv-home) are folders on the GPU machine; set them to move them.
# CHECKS=a,b runs a subset: planner,gpu24,bench,compile,checkpointing,recipe,wan,wan22,toyworld.
# All of them take up to about 33 minutes; to keep each command under 10 minutes, run them
# in parts, in this order (the first has the most value):
#   CHECKS=planner,gpu24             (about 10 min at most; scripts/plan_vs_measured.py:
#                                     the planner's predicted GPU peak per stage against
#                                     torch.cuda.max_memory_allocated, ModelScope 110 s and
#                                     Wan 210 s; then Wan 14B on a 24 GiB slice of the card,
#                                     270 s: each run builds 14B random weights in host
#                                     memory), then
#   CHECKS=bench,checkpointing,wan   (about 8 min at most), then
#   CHECKS=compile,recipe            (about 9 min at most), then
#   CHECKS=wan22                     (Wan 2.2 TI2V-5B at its default size: about 5 min), then
#   CHECKS=toyworld                  (pretraining, the probe and the demo with the new
#                                     weights: about 8.5 min at most).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu-checks}
mkdir -p "$OUT"
PY=${PY:-python3}
CHECKS=${CHECKS:-planner,gpu24,bench,compile,checkpointing,wan,wan22,recipe,toyworld}
SITE=${SITE:-/tmp/site}
if [ -z "${SKIP_INSTALL:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
fi
export PYTHONPATH="$SITE:$PWD:$PWD/registry:$PWD/plugins/dv-modelscope:$PWD/plugins/dv-metrics:$PWD/plugins/dv-toyworld:$PWD/plugins/dv-wan${PYTHONPATH:+:$PYTHONPATH}"
"$PY" scripts/device_entry_points.py "$SITE" >> "$OUT/log.txt"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 DV_HOME=${DV_HOME:-/tmp/dv-home}
DEVICE=${DEVICE:-cuda}
# A dry run on a CPU: BACKBONE=tiny WAN_BACKBONE=tiny-wan WAN_FRAMES=9 DEVICE=cpu SKIP_INSTALL=1 PY=.venv/bin/python
# (and, for planner and gpu24: WAN14_BACKBONE=tiny-wan WAN14_FRAMES=9 MS_SWAP=2 WAN_SWAP=1 G24_SWAP=1 LIMIT_SCALE=4)
BACKBONE=${BACKBONE:-modelscope}
WAN_BACKBONE=${WAN_BACKBONE:-wan}
WAN_FRAMES=${WAN_FRAMES:-49}
FRAMES=${FRAMES:-32}
TOY_STEPS=${TOY_STEPS:-20000}
WAN_COMPOSE_FRAMES=${WAN_COMPOSE_FRAMES:-33}  # planner: Wan composes 33 frames, not its default 81 (time)
MS_SWAP=${MS_SWAP:-20}                        # planner: --blocks-to-swap N on ModelScope (77 blocks)
WAN_SWAP=${WAN_SWAP:-10}                      # ... on Wan 1.3B (30 blocks)
WAN22_BACKBONE=${WAN22_BACKBONE:-wan2.2-5b}   # wan22
WAN14_BACKBONE=${WAN14_BACKBONE:-wan-14b}     # gpu24
WAN14_FRAMES=${WAN14_FRAMES:-33}
G24_SWAP=${G24_SWAP:-27}                      # gpu24: blocks the subject's lever run swaps (docs/memory.md)

DV=("$PY" -c "from dreamvideo_cli.cli import run; run()")  # `dv`, from the carried tree
wanted() { [[ ",$CHECKS," == *",$1,"* ]]; }
check() {  # check NAME LIMIT_S COMMAND...: time it, keep its stdout (JSON) and stderr
    local name=$1 limit=$(($2 * ${LIMIT_SCALE:-1})); shift 2  # LIMIT_SCALE=4: a slow CPU's dry run
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/log.txt"
    local start=$SECONDS
    timeout -k 20 "$limit" "$@" > "$OUT/.stdout" 2>> "$OUT/log.txt"
    local rc=$?
    "$PY" - "$name" "$((SECONDS - start))" "$rc" "$OUT/.stdout" "$*" >> "$OUT/results.jsonl" <<'PY'
import json, sys
name, seconds, rc, path, command = sys.argv[1:]
text = open(path).read()
try:
    output = json.loads(text)
except ValueError:
    output = text[-2000:]
print(json.dumps({"name": name, "seconds": int(seconds), "rc": int(rc), "command": command, "output": output}))
PY
    tail -n 1 "$OUT/results.jsonl" | cut -c1-300
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/log.txt" 2>&1
# First, what every check needs: dv and its libraries import with the machine's own torch
# (the device's image may hold an older torch than the lock file's), and the GPU is seen.
check imports 90 "$PY" -c 'import json, torch, diffusers, transformers, open_clip, typer, pluggy, av
import dreamvideo_cli.cli, dv_wan, dv_modelscope
print(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
    "transformers": transformers.__version__, "cuda": torch.cuda.is_available(),
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}))'
if [ "$(tail -n 1 "$OUT/results.jsonl" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["rc"])')" != 0 ]; then
    echo "dv does not import here: see $OUT/log.txt" | tee -a "$OUT/log.txt"
    exit 1
fi
# The planner against reality (scripts/plan_vs_measured.py; its own JSON lines, "check":
# "plan-vs-measured" or "gpu24", go into results.jsonl as each finishes): every stage with
# default settings, then --gradient-checkpointing, --fp8, --offload-activations and
# --blocks-to-swap N, 2 steps each, random weights, the plans computed on the CPU meanwhile.
PVM=("$PY" scripts/plan_vs_measured.py)
if wanted planner; then
    check plan-vs-measured-modelscope 110 "${PVM[@]}" compare --backbone "$BACKBONE" --device "$DEVICE" \
        --swap "$MS_SWAP" --results "$OUT/results.jsonl"
    check plan-vs-measured-wan 210 "${PVM[@]}" compare --backbone "$WAN_BACKBONE" --device "$DEVICE" \
        --swap "$WAN_SWAP" --compose-frames "$WAN_COMPOSE_FRAMES" --results "$OUT/results.jsonl"
fi
# A 24 GB card on this one: --fit 24GiB under a 24 GiB memory fraction (motion, 3 steps, and
# subject), the levers given outright under it, then resident against levers, seconds per step.
wanted gpu24 && check gpu24-wan14b 270 "${PVM[@]}" gpu24 --backbone "$WAN14_BACKBONE" --device "$DEVICE" \
    --frames "$WAN14_FRAMES" --swap "$G24_SWAP" --results "$OUT/results.jsonl"
BENCH=(bench --backbone "$BACKBONE" --random-weights --frames "$FRAMES" --device "$DEVICE" --json)
wanted bench && check bench-modelscope 170 "${DV[@]}" "${BENCH[@]}"
wanted compile && check bench-modelscope-compile 240 "${DV[@]}" "${BENCH[@]}" --compile --only subject,motion
wanted checkpointing && check bench-motion-checkpointing 120 "${DV[@]}" "${BENCH[@]}" --gradient-checkpointing --only motion
wanted wan && check bench-wan-subject-compose 200 "${DV[@]}" bench --backbone "$WAN_BACKBONE" --random-weights --frames "$WAN_FRAMES" --device "$DEVICE" --sample-steps 10 --only subject,compose --json
wanted wan && check bench-wan-motion-49x832x480-checkpointing 200 "${DV[@]}" bench --backbone "$WAN_BACKBONE" --random-weights --frames "$WAN_FRAMES" --device "$DEVICE" --gradient-checkpointing --only motion --repeats 3 --json
# Wan 2.2 TI2V-5B at its default size (1280x704, 121 frames): the subject step, the motion
# step with checkpointing and a compose of 10 sampling steps.
wanted wan22 && check bench-wan22-5b-checkpointing 300 "${DV[@]}" bench --backbone "$WAN22_BACKBONE" --random-weights --device "$DEVICE" --gradient-checkpointing --sample-steps 10 --repeats 2 --json
if wanted recipe; then  # the default recipe, shortened to 300 + 100 subject and 300 motion steps
    check recipe-subject-300-100 300 "${DV[@]}" subject learn .gpu-data/photos --name gpu-subject --backbone "$BACKBONE" --random-weights \
        --embedding-steps 300 --adapter-steps 100 --save-every 0 --device "$DEVICE" --json
    check recipe-motion-300 300 "${DV[@]}" motion learn .gpu-data/clips --name gpu-motion --backbone "$BACKBONE" --random-weights \
        --adapter-steps 300 --save-every 0 --device "$DEVICE" --json
fi
if wanted toyworld; then
    check toyworld-pretrain 240 "$PY" -m dv_toyworld.pretrain --device "$DEVICE" --seed 0 --steps "$TOY_STEPS" --save-every 1000 --output "$OUT/toyworld.safetensors"
    check toyworld-probe 120 "$PY" -m dv_toyworld.probe --weights "$OUT/toyworld.safetensors" --json
    # The demo with the new weights, on the GPU machine's CPU cores (the toy model's ops are too
    # small for a GPU); compare with docs/toyworld.md's figures for the committed weights.
    check toyworld-demo 150 env DV_TOYWORLD_WEIGHTS="$OUT/toyworld.safetensors" "${DV[@]}" demo --json --output "$OUT/toy-demo"
fi
rm -f "$OUT/.stdout"
echo "results: $OUT/results.jsonl"
