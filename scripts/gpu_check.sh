#!/usr/bin/env bash
# The CUDA path in one go, at most 8 minutes on one GPU:
#   1. the CUDA tests (every test file that checks torch.cuda.is_available, `-k cuda`);
#   2. BC training throughput on CUDA (`ttm-bench train-throughput --device cuda`, bf16
#      autocast as ttm-train) on the robomimic Lift fixture;
#   3. a short ttm-eval with EGL on the GPU: PointCue demos, 30 CUDA training steps of a small
#      policy, 4 episodes in 2 env processes; the GL renderer eval.json records must not be
#      a software one (llvmpipe).
# Writes OUT/summary.json (default runs/gpu_check) and the logs of each part beside it.
# Exit 0 only when every part passed; 2 when there is no GPU.
#
#   bash scripts/gpu_check.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check}"
PY=.venv/bin/python
export MUJOCO_GL=egl WANDB_MODE=offline

if [ ! -x "$PY" ]; then
  echo "gpu_check: no $PY: run scripts/setup.sh first" >&2
  exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing was checked" >&2
  exit 2
fi
rm -rf "$OUT" && mkdir -p "$OUT"
t0=$(date +%s)

# 1. CUDA tests (<= 170 s)
mapfile -t files < <(grep -rl --include='test_*.py' "cuda.is_available" tests | sort)
timeout 170 "$PY" -m pytest -q -rs -k cuda --junitxml="$OUT/cuda_tests.xml" "${files[@]}" \
  > "$OUT/cuda_tests.log" 2>&1
tests_rc=$?
t1=$(date +%s)

# 2. training throughput on CUDA (<= 140 s)
timeout 140 "$PY" -m eval.bench train-throughput --device cuda --steps 10 \
  --dataset tests/fixtures/robomimic_lift_image84_3demos.hdf5 --out "$OUT/bench" \
  > "$OUT/bench.log" 2>&1
bench_rc=$?
t2=$(date +%s)

# 3. collect, train on CUDA, evaluate with EGL on the GPU (<= 140 s; timeout stops them all)
timeout 140 bash -c '
  set -e
  "$0" -m envs.collect --task PointCue --episodes 6 --out "$1/pointcue.hdf5"
  "$0" -m train.train --dataset "$1/pointcue.hdf5" --out "$1/train" --device cuda \
    --steps 30 --batch-size 8 --save-every 30 --valid-every 0 --log-every 10 \
    --model.dim 64 --model.ttm.layers 2
  "$0" -m eval.evaluate --checkpoint "$1/train/checkpoints/last" --device cuda \
    --episodes 4 --envs 2 --out "$1/eval"
' "$PY" "$OUT" > "$OUT/eval.log" 2>&1
eval_rc=$?
t3=$(date +%s)

"$PY" - "$OUT" "$tests_rc" "$bench_rc" "$eval_rc" "$t0" "$t1" "$t2" "$t3" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

out = Path(sys.argv[1])
tests_rc, bench_rc, eval_rc = map(int, sys.argv[2:5])
t0, t1, t2, t3 = map(int, sys.argv[5:9])


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


tests = {"returncode": tests_rc, "seconds": t1 - t0, "log": str(out / "cuda_tests.log")}
try:
    suite = ET.parse(out / "cuda_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
except (OSError, ET.ParseError, IndexError):
    pass
bench = load(out / "bench" / "train_throughput.json")
throughput = {"returncode": bench_rc, "seconds": t2 - t1, "log": str(out / "bench.log")}
if bench:
    throughput["results"] = bench["results"]
report = load(out / "eval" / "eval.json")
evaluation = {"returncode": eval_rc, "seconds": t3 - t2, "log": str(out / "eval.log")}
if report:
    keys = ("success_rate", "episodes_run", "policy_steps_per_s", "env_steps_per_s", "gl")
    evaluation.update({k: report.get(k) for k in keys})
renderer = ((report or {}).get("gl") or {}).get("renderer") or ""
software = any(s in renderer.lower() for s in ("llvmpipe", "softpipe", "swrast"))
problems = [
    f"{name} exited {rc}"
    for name, rc in (("CUDA tests", tests_rc), ("throughput", bench_rc), ("eval", eval_rc))
    if rc
]
if tests.get("tests") and tests.get("skipped") == tests.get("tests"):
    problems.append("every CUDA test was skipped")
if report and software:
    problems.append(f"EGL rendered in software ({renderer}), not on the GPU")
summary = {
    "ok": not problems,
    "problems": problems,
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "seconds": t3 - t0,
    "cuda_tests": tests,
    "train_throughput": throughput,
    "eval": evaluation,
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
print(f"gpu_check: {'ok' if not problems else 'FAILED: ' + '; '.join(problems)} ({out / 'summary.json'})")
sys.exit(0 if not problems else 1)
EOF
