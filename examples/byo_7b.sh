#!/usr/bin/env bash
# What "your own model" costs at 7B scale, on one GPU: a LLaVA-1.5-7B-shaped checkpoint with random weights is
# written the way the Hub lays it out, quantized once and saved (quota quantize), loaded back (quota.load), and
# profiled from disk with torchrun (RANKS processes sharing the GPU). Every step's wall time, the peak GPU memory
# and the folders' sizes go to OUT/byo_7b.json, with the step logs beside it (written under WORK/logs as the steps
# run and copied to OUT at the end, so an OUT that is emptied between polls loses nothing).
#
#   bash examples/byo_7b.sh WORK OUT [RANKS] [QUESTIONS] [GRID_STEPS]
#
# WORK needs about 25 GB of disk (the bf16 checkpoint, the quantized one, the quantized-model cache).
set -euo pipefail
WORK=${1:?usage: byo_7b.sh WORK OUT [RANKS] [QUESTIONS] [GRID_STEPS]}
OUT=${2:?usage: byo_7b.sh WORK OUT [RANKS] [QUESTIONS] [GRID_STEPS]}
RANKS=${3:-4}
QUESTIONS=${4:-32}
GRID_STEPS=${5:-8}
FINAL_OUT=$OUT
OUT="$WORK/logs"
mkdir -p "$WORK" "$OUT" "$FINAL_OUT"
export PYTHONUNBUFFERED=1 QUOTA_QUANT_CACHE="$WORK/cache"
now() { date +%s.%N; }
step() {  # step NAME COMMAND...: run it, log it, record its seconds
  local name=$1; shift
  local t0; t0=$(now)
  "$@" > "$OUT/$name.log" 2>&1
  python -c "import json, sys; print(json.dumps({'step': sys.argv[1], 'seconds': round(float(sys.argv[3]) - float(sys.argv[2]), 1)}))" \
    "$name" "$t0" "$(now)" >> "$OUT/steps.jsonl"
}
: > "$OUT/steps.jsonl"

# SHAPE_ARGS (e.g. "--text-layers 1 --vision-layers 1 --device cpu") shrinks the model for a smoke run
step write python examples/llava7b_shaped.py --out "$WORK/ck7b" ${SHAPE_ARGS:-}
step export python -m quota data export --split calibration --limit "$QUESTIONS" --out "$WORK/calib" --overwrite
step quantize python -m quota quantize --model "$WORK/ck7b" --data "$WORK/calib/records.jsonl" --out "$WORK/q7b" \
  --overwrite --json
step load python - "$WORK/q7b" <<'EOF'
import json, sys, time, torch, quota
t0 = time.time()
saved = quota.load(sys.argv[1])
cuda = torch.cuda.is_available()
if cuda:
    torch.cuda.synchronize()
print(json.dumps({"load_seconds": round(time.time() - t0, 2), "device": str(next(saved.module.parameters()).device),
                  "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}))
EOF
step profile torchrun --standalone --nproc_per_node "$RANKS" -m quota.cli.main profile --model "$WORK/ck7b" \
  --data "$WORK/calib/records.jsonl" --limit "$QUESTIONS" --grid-steps "$GRID_STEPS" --batch-size 8 \
  -o "$OUT/profile_7b.json"

python - "$WORK" "$OUT" "$RANKS" "$QUESTIONS" "$GRID_STEPS" <<'EOF'
import json, pathlib, sys, torch
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
steps = {json.loads(l)["step"]: json.loads(l)["seconds"] for l in (out / "steps.jsonl").read_text().splitlines()}
last_json = lambda name: json.loads((out / f"{name}.log").read_text().strip().splitlines()[-1])
quantize = json.loads((out / "quantize.log").read_text()[(out / "quantize.log").read_text().index("{"):])
profile = json.loads((out / "profile_7b.json").read_text())
record = {
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "ranks": int(sys.argv[3]), "questions": int(sys.argv[4]),
    "grid_steps": int(sys.argv[5]), "steps_seconds": steps, "write": last_json("write"), "quantize": quantize,
    "load": last_json("load"), "bf16_folder_bytes": size(work / "ck7b"), "quantized_folder_bytes": size(work / "q7b"),
    "profile_timing": profile["timing"], "profile_grid": profile["grid"], "profile_layers": profile["n_layers"],
}
(out / "byo_7b.json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps(record, indent=2))
EOF
cp "$OUT"/* "$FINAL_OUT"/
