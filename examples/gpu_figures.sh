#!/usr/bin/env bash
# Every figure of docs/results that needs a GPU, one section at a time (each fits a 10-minute slot on one H100,
# except where noted). Usage: examples/gpu_figures.sh SECTION OUT_DIR
#   tests    GPU runs of the kernel and runtime tests, the newest first (TESTS=... to choose; cut at TESTS_TIMEOUT,
#            default 500 s)
#   e2e      end-to-end speed and memory, LLaVA-1.5-7B- and Qwen2-VL-7B-shaped models (random weights), prefill
#            and decode replayed from CUDA graphs; one architecture takes about 6 minutes on an H200 with the
#            default E2E_REPEATS=3, so give each its own call (E2E_ARCHS=...)
#   suite    every stage-wise baseline at 64/128/192 equivalent tokens, bf16 and W4A4+KV4, 200 questions/task
#   profile  the testbed profile under W4A4+KV4 (grid of 8 keep counts; --resume continues it) and the
#            additivity check on 30 random schedules
#   fpprof   the same profile measured in full precision (for the "what calibrating under the deployed
#            operators is worth" row)
#   table    quota's recipes (64, 128, 192 tokens and budget 0.3, from both profiles) on the low-bit testbed, and
#            the stage-wise baselines at the 0.3 recipe's equivalent tokens
#   steps    torch.profiler of a prefill and of decode steps, bf16 and W4A4+KV4, LLaVA-1.5-7B shape, eager and
#            graphed (STEPS_STATIC=--static; about 6 min each)
#   train    one piece of testbed training (TRAIN_MINUTES, default 8) on TRAIN_GPUS GPUs (default all, data-parallel
#            under torchrun), resuming from $TRAIN_CKPT (default ~/ckpt) or, the first time, starting from the shipped
#            weights; exports to OUT_DIR/weights (the card lists every piece; TRAIN_TOKEN_AUX sets
#            --token-aux-weight). TRAIN_EVAL=N then scores the export on the first N test questions of each task
#            (bf16, one process per task over the GPUs, merged by quota.eval.merge into train_eval.json; about
#            a minute for N=500 on 4 H200s, mostly loading)
#   pipeline profile (GRID_STEPS keep counts, default 8), suite, fpprof, validation and table in one go (about
#            25 minutes), several processes
#            sharing the GPU (the testbed is small, its forward launch-bound): meant to run detached
#            (setsid) on a warm machine while other calls go on; writes OUT_DIR/pipeline.done at the end.
#            On a machine with several GPUs the profile's ranks take one GPU each (NCCL) and the concurrent
#            processes spread over the GPUs (CUDA_VISIBLE_DEVICES); with one GPU they all share it, as before.
#            Finished pieces already in OUT_DIR (profiles, suite rows) are kept, so seeding it resumes the run.
#   warm     the testbed quantized once into the cache of quantized models (GPTQ and the clipping searches), alone
#            on the GPU, so that every later process loads it: computed beside 9 other processes it took about
#            13 minutes on an H100, and every process asking for it waited that long
#   joint_profile  issue 17's profile: W4A4+KV4 with per-stage weights and interaction terms (GRID_STEPS, default
#            18, so that 64/128/192 are grid points; INTERACTIONS, default 4; RANKS ranks, default 4; BATCH questions
#            per forward, default 64), alone on the GPU (15 minutes on one H100; a profile already in OUT_DIR is
#            kept); then joint_refine beside its additivity check before and after the interaction terms on 30
#            schedules (run detached). OUT_DIR/joint.log has the phases' times, OUT_DIR/joint_profile.done the end
#   joint_refine  recipes of OUT_DIR/testbed_joint.json at 64/128/192 tokens and budget 0.3 under each damage of
#            REFINE_DAMAGES (default "kl task_loss", and kl_teacher when the profile has it), refined by measuring the REFINE_K (default 8) best predicted
#            schedules and the REFINE_ANCHORS (default 4) best stage-wise ones on REFINE_QUESTIONS (default 256)
#            held-out calibration questions (recipe_refined_DAMAGE_K.json; existing ones are kept), beside the
#            unrefined recipes under either reading of the curves (recipe_predicted_DAMAGE_FIT_K.json)
#   joint_suite  issue 17's table: every stage-wise preset (published-faithful and ablated) at 64/128/192 tokens
#            and at the tokens of each budget-0.3 recipe, and the refined recipes (OUT_DIR/recipe_refined_*.json, or
#            RECIPES=...), on one low-bit model, LIMIT (default 500) test questions per task, SUITE_PROCS (default
#            6) processes sharing the GPU, SUITE_BATCH (default 64) questions per forward, then the report with the
#            paired difference; run detached, resumable
#   joint_fp  issue 17's full-precision ablation: the same profile in bf16 (--no-latency; partial rank files in
#            OUT_DIR resume it; FP_SELECTIONS, default the four selection candidates the low-bit joint profile chose
#            among, before recycling was one), its recipes on the same low-bit model into OUT_DIR/joint_suite, then
#            the report
#   joint_all  warm, then joint_fp (unless JOINT_FP=0), joint_profile and the suite's rows that need no recipe
#            side by side, then the recipes' rows, and the report of every row (run detached)
# Results land in OUT_DIR; logs beside them. Nothing here needs OR-Tools or cvxpy except `table`, which
# solves with `--solver dp` (pure Python) so that it runs where they are not installed.
set -euo pipefail
section="${1:?section: tests|e2e|suite|profile|fpprof|table|steps|train|pipeline|warm|joint_profile|joint_refine|joint_suite|joint_fp|joint_all}"
out="${2:?output folder}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
q="${QUOTA_CMD:-python3 -m quota}"  # QUOTA_CMD: another command line (a dry run prints what would run)

bf16_config() {  # the full-precision QuantConfig of the fpprof rows, written to $out/bf16.json
  printf '{"type": "quota.QuantConfig", "version": 1, "w_bits": 16, "a_bits": 16, "kv_bits": 16, "rotate": false}\n' \
    > "$out/bf16.json"
}

n_gpus() {  # GPUs this machine has (1 when none is visible, so that CPU runs share "GPU" 0)
  python3 -c 'import torch; print(max(1, torch.cuda.device_count()))'
}

on_gpu() {  # on_gpu K CMD...: run CMD on GPU K modulo the machine's GPUs (concurrent processes spread out)
  local k="$1"; shift
  CUDA_VISIBLE_DEVICES=$((k % GPUS)) "$@"
}

recipe_tokens() {  # the mean keep count of recipe $1 (its equivalent visual tokens), rounded to 0.1
  python3 -c "import json, sys; s = json.load(open(sys.argv[1]))['schedule']; print(round(sum(s) / len(s), 1))" "$1"
}

solve_recipes() {  # quota's recipes (64, 128, 192 tokens, budget 0.3) from profile $out/$1.json, into plans=()
  local k
  plans=()
  for k in 64 128 192; do
    $q solve --profile "$out/$1.json" --solver dp --keep-tokens "$k" -o "$out/recipe_${1}_k$k.json" > /dev/null
    plans+=("recipe:$out/recipe_${1}_k$k.json")
  done
  $q solve --profile "$out/$1.json" --solver dp --budget 0.3 -o "$out/recipe_${1}_b0.3.json" > /dev/null
  plans+=("recipe:$out/recipe_${1}_b0.3.json")
}

# issue 17's sections: the stage-wise presets of its table, the suite's settings, and the phase log
joint_presets=(fastv pyramiddrop sparsevlm_norecycle sparsevlm visionzip visionzip_nomerge divprune cdpruner)
joint_suite_args=(--suite "$out/joint_suite" --precisions lowbit --limit "${LIMIT:-500}" --batch-size "${SUITE_BATCH:-64}"
                  ${JOINT_SUITE_ARGS:-})
stamp() { date +"%T $*" >> "$out/joint.log"; }

budget_target() {  # budget_target K: target=(--keep-tokens K), or (--budget B) for K = bB
  case "$1" in b*) target=(--budget "${1#b}") ;; *) target=(--keep-tokens "$1") ;; esac
}

joint_recipes() {  # plans=(recipe:...) of the refined recipes (RECIPES to choose), t30s=(tokens of their 0.3 ones)
  local r
  plans=() t30s=()
  for r in ${RECIPES:-"$out"/recipe_refined_*.json}; do
    [ -f "$r" ] && plans+=("recipe:$r")
  done
  for r in ${RECIPES:-"$out"/recipe_refined_*.json}; do
    case "$r" in *_b0.3.json) [ -f "$r" ] && t30s+=("$(recipe_tokens "$r")") ;; esac
  done
  t30s=($(printf '%s\n' "${t30s[@]}" | sort -u))
}

joint_report() {  # issue 17's table from every row in $out/joint_suite (presets, recipe_refined_*, recipe_fp_*)
  local r
  joint_recipes
  for r in "$out"/recipe_fp_*.json; do
    [ -f "$r" ] && plans+=("recipe:$r")
  done
  timeout 600 $q eval "${joint_suite_args[@]}" --plans "${joint_presets[@]}" "${plans[@]}" \
    --budgets 64 128 192 "${t30s[@]}" --report-only > "$out/joint_suite.log" 2>&1 || true
}

case "$section" in
  tests)
    # the newest and riskiest first (a first call against later ones; kernels not yet run on a GPU), then the rest;
    # pytest collects each file once, so the folders add only what the list above them lacks
    # (the first-call checks and 33 of the 53 W4A4 GEMM tests have run on an H100; the kernels after them not yet)
    first=(tests/kernels/test_w4_gemv.py tests/kernels/test_rmsnorm_quant.py tests/kernels/test_act_quant.py
           tests/kernels/test_w4a8_gemm.py tests/kernels/test_fp8_gemm.py tests/kernels/test_kv_attention.py
           tests/kernels/test_token_merge.py tests/kernels/test_cluster_merge.py tests/kernels/test_w4a4_gemm.py
           tests/kernels/test_first_call_gpu.py)
    timeout "${TESTS_TIMEOUT:-500}" python3 -m pytest -q -rf -p no:cacheprovider ${TESTS:-${first[*]} tests/kernels tests/runtime} \
      > "$out/tests_gpu.log" 2>&1 || true
    tail -15 "$out/tests_gpu.log" ;;
  e2e)
    $q solve --budget 0.3 --solver dp -o "$out/recipe_e2e_b0.3.json" > /dev/null  # the shipped profile's 30% recipe
    for arch in ${E2E_ARCHS:-llava-1.5-7b qwen2-vl-7b}; do
      timeout "${E2E_TIMEOUT:-540}" $q bench e2e --arch "$arch" --repeats "${E2E_REPEATS:-3}" --recipe "$out/recipe_e2e_b0.3.json" --out "$out" \
        > "$out/e2e_$arch.log" 2>&1 || true
    done
    tail -12 "$out"/e2e_*.log ;;
  suite)
    timeout 560 $q eval --suite "$out/suite" --limit 200 --resume > "$out/suite.log" 2>&1 || true
    tail -40 "$out/suite.log" ;;
  profile)
    timeout 560 $q profile -o "$out/testbed_gpu.json" --grid-steps 18 --resume --validate 30 > "$out/profile.log" 2>&1 || true
    tail -20 "$out/profile.log" ;;
  fpprof)
    bf16_config
    timeout 560 $q profile -o "$out/testbed_gpu_fp.json" --quant "$out/bf16.json" --grid-steps 18 --resume --no-latency \
      > "$out/fpprof.log" 2>&1 || true
    tail -5 "$out/fpprof.log" ;;
  table)
    all=()
    for prof in testbed_gpu testbed_gpu_fp; do
      solve_recipes "$prof" && all+=("${plans[@]}")
    done
    timeout 560 $q eval --suite "$out/suite" --plans "${all[@]}" --precisions lowbit --limit 200 --resume \
      > "$out/table.log" 2>&1 || true
    timeout 300 $q eval --suite "$out/suite" --budgets "$(recipe_tokens "$out/recipe_testbed_gpu_b0.3.json")" \
      --precisions lowbit --limit 200 --resume > "$out/table_b0.3.log" 2>&1 || true
    tail -30 "$out/table_b0.3.log" ;;
  steps)
    for phase in prefill decode; do
      timeout 170 python3 examples/profile_step.py --phase "$phase" --steps 8 ${STEPS_STATIC:-} \
        > "$out/steps_bf16_$phase.txt" 2>&1 || true
      timeout 170 python3 examples/profile_step.py --phase "$phase" --steps 8 --lowbit ${STEPS_STATIC:-} \
        > "$out/steps_lowbit_$phase.txt" 2>&1 || true
    done
    head -3 "$out"/steps_*.txt ;;
  train)
    ckpt="${TRAIN_CKPT:-$HOME/ckpt}" minutes="${TRAIN_MINUTES:-8}"
    GPUS="${TRAIN_GPUS:-$(n_gpus)}"
    mkdir -p "$out/weights"  # the card's history of pieces travels in the checkpoint
    timeout $((minutes * 60 + 90)) python3 -m torch.distributed.run --standalone --nproc_per_node "$GPUS" \
      -m quota.testbed.train --init quota/testbed/weights --resume --ckpt "$ckpt" \
      --minutes "$minutes" --steps "${TRAIN_STEPS:-3000}" --lr "${TRAIN_LR:-5e-4}" --per-task "${TRAIN_PER_TASK:-2}" \
      --token-aux-weight "${TRAIN_TOKEN_AUX:-0}" \
      --export "$out/weights" > "$out/train.log" 2>&1 || true
    if [ -n "${TRAIN_EVAL:-}" ]; then  # one process per task, spread over the GPUs, merged into train_eval.json
      mkdir -p "$out/train_eval" && i=0
      for task in $(python3 -c 'from quota.testbed.tasks import TASKS; print(*TASKS)'); do
        on_gpu $i timeout 300 $q eval --weights "$out/weights" --tasks "$task" \
          --limit "$TRAIN_EVAL" -o "$out/train_eval/$task.json" > "$out/train_eval/$task.log" 2>&1 &
        i=$((i + 1))
      done
      wait
      python3 -m quota.eval.merge -o "$out/train_eval.json" "$out"/train_eval/*.json || tail -n 3 "$out"/train_eval/*.log
      tar czf "$out/train_eval.tgz" -C "$out" train_eval && rm -r "$out/train_eval"
    fi
    tail -4 "$out/train.log" ;;
  pipeline)
    ranks="${RANKS:-4}" GPUS="$(n_gpus)"
    baselines=(fastv pyramiddrop sparsevlm visionzip random)
    bf16_config
    date +"%T profile (W4A4+KV4) on $ranks ranks, $GPUS GPUs" >> "$out/pipeline.log"
    [ -f "$out/testbed_gpu.json" ] || timeout 1200 torchrun --standalone --nproc_per_node "$ranks" -m quota.cli.main \
      profile -o "$out/testbed_gpu.json" --grid-steps "${GRID_STEPS:-18}" --resume > "$out/profile.log" 2>&1 || true
    date +"%T validation, suite, full-precision profile" >> "$out/pipeline.log"
    on_gpu 0 timeout 1200 $q profile -o "$out/testbed_gpu.json" --validate 30 --validate-only > "$out/validate.log" 2>&1 &
    on_gpu 1 timeout 1200 $q eval --suite "$out/suite" --limit 200 --resume --precisions bf16 > "$out/suite_bf16.log" 2>&1 &
    k=2
    for plans in "fastv pyramiddrop" "sparsevlm visionzip" "random"; do
      on_gpu $k timeout 1200 $q eval --suite "$out/suite" --limit 200 --resume --precisions lowbit --plans $plans \
        > "$out/suite_lowbit_${plans%% *}.log" 2>&1 &
      k=$((k + 1))
    done
    # the full-precision profile: 3 ranks over the GPUs after the ones above (all on GPU 0 when there is one)
    [ -f "$out/testbed_gpu_fp.json" ] || CUDA_VISIBLE_DEVICES="$(python3 -c "import sys; n, k = map(int, sys.argv[1:]); \
      print(','.join(str((k + i) % n) for i in range(min(3, n))))" "$GPUS" "$k")" timeout 1200 torchrun --standalone \
      --nproc_per_node 3 -m quota.cli.main profile -o "$out/testbed_gpu_fp.json" --quant "$out/bf16.json" \
      --grid-steps 18 --resume --no-latency > "$out/fpprof.log" 2>&1 &
    wait
    timeout 300 $q eval --suite "$out/suite" --limit 200 --resume > "$out/suite.log" 2>&1 || true
    date +"%T table" >> "$out/pipeline.log"
    mkdir -p "$out/table" && cp "$out"/suite/lowbit__*.json "$out"/suite/bf16__all.json "$out/table/"
    all=() k=0
    for prof in testbed_gpu testbed_gpu_fp; do
      solve_recipes "$prof" && all+=("${plans[@]}")
      on_gpu $k timeout 1200 $q eval --suite "$out/table" --plans "${plans[@]}" --precisions lowbit --limit 200 --resume \
        > "$out/table_$prof.log" 2>&1 &
      k=$((k + 1))
    done
    tokens30="$(recipe_tokens "$out/recipe_testbed_gpu_b0.3.json")"  # the baselines at the 0.3 recipe's tokens
    if [ "$GPUS" -gt 2 ]; then  # spare GPUs take the baselines at those tokens meanwhile
      for b in "${baselines[@]}"; do
        on_gpu $k timeout 1200 $q eval --suite "$out/table" --plans "$b" --budgets "$tokens30" --precisions lowbit \
          --limit 200 --resume > "$out/table_b0.3_$b.log" 2>&1 &
        k=$((k + 1)); [ $((k % GPUS)) -eq 0 ] && k=2
      done
    fi
    wait
    timeout 600 $q eval --suite "$out/table" --plans "${baselines[@]}" --budgets "$tokens30" --precisions lowbit \
      --limit 200 --resume > "$out/table_b0.3.log" 2>&1 || true
    timeout 300 $q eval --suite "$out/table" --plans "${baselines[@]}" "${all[@]}" --budgets 64 128 192 "$tokens30" \
      --precisions lowbit --limit 200 --resume > "$out/table.log" 2>&1 || true
    date +"%T done" >> "$out/pipeline.log" && touch "$out/pipeline.done" ;;
  joint_profile)
    # The W4A4+KV4 profile alone on the GPU (its ranks share it; nothing else runs beside them), then the additivity
    # check beside the refined solves. Resumable: a finished profile is kept.
    ranks="${RANKS:-4}" prof="$out/testbed_joint.json"
    stamp "profile on $ranks ranks"
    if [ ! -f "$prof" ]; then
      timeout 3600 torchrun --standalone --nproc_per_node "$ranks" -m quota.cli.main profile -o "$prof" \
        --grid-steps "${GRID_STEPS:-18}" --interactions "${INTERACTIONS:-4}" --batch-size "${BATCH:-64}" --resume \
        ${JOINT_PROFILE_ARGS:-} > "$out/joint_profile.log" 2>&1 || true
    fi
    stamp "validation before and after the interaction terms (unless the profile has it), beside the refined solves"
    python3 -c 'import json, sys; sys.exit("additivity" in json.load(open(sys.argv[1])).get("extra", {}))' "$prof" \
      && { timeout 1800 $q profile -o "$prof" --validate 30 --validate-only ${JOINT_PROFILE_ARGS:-} \
           > "$out/joint_validate.log" 2>&1 & }
    bash "$0" joint_refine "$out"
    wait
    stamp "done" && touch "$out/joint_profile.done" ;;
  joint_refine)
    # Unrefined recipes (a second or two each) and refined ones, one process per (damage, target) side by side.
    prof="$out/testbed_joint.json"
    damages="${REFINE_DAMAGES:-kl task_loss$(python3 -c 'import json, sys
print(" kl_teacher" if "kl_teacher" in json.load(open(sys.argv[1]))["damage"] else "")' "$prof")}"
    stamp "refined solves: $damages"
    for damage in $damages; do
      for k in 64 128 192 b0.3; do
        budget_target "$k"
        for fit in monotone raw; do
          $q solve --profile "$prof" --solver dp "${target[@]}" --damage "$damage" --damage-fit "$fit" \
            -o "$out/recipe_predicted_${damage}_${fit}_$k.json" > /dev/null || true
        done
        [ -f "$out/recipe_refined_${damage}_$k.json" ] && continue
        timeout 1800 $q solve --profile "$prof" --solver dp "${target[@]}" --damage "$damage" \
          --refine "${REFINE_K:-8}" --refine-anchors "${REFINE_ANCHORS:-4}" --refine-questions "${REFINE_QUESTIONS:-256}" \
          ${JOINT_SOLVE_ARGS:-} -o "$out/recipe_refined_${damage}_$k.json" > "$out/refine_${damage}_$k.log" 2>&1 &
      done
    done
    wait
    stamp "refined solves done" ;;
  joint_suite)
    # Issue 17's table on one low-bit model in one run: every stage-wise preset at 64/128/192 tokens and at the
    # tokens of each 0.3 recipe, and quota's refined recipes (RECIPES, default: OUT_DIR/recipe_refined_*.json),
    # LIMIT (default 500) test questions per task; SUITE_PROCS processes share the GPU, each writing its own rows;
    # the report (with the paired difference) is written last from all of them. SUITE_PARTS chooses the rows:
    # "fixed" (the presets at 64/128/192, which need no recipe), "recipes" (the recipes and the presets at their
    # 0.3 tokens), or both (the default). The all-token row comes first in either part, under a lock, so that
    # two parts running side by side compute it once.
    suite_args=("${joint_suite_args[@]}" --resume) parts="${SUITE_PARTS:-fixed recipes}"
    joint_recipes
    stamp "suite ($parts): the all-token row, then ${#plans[@]} recipes and the presets at 64 128 192 ${t30s[*]} tokens"
    mkdir -p "$out/joint_suite"
    flock "$out/joint_suite/.all_tokens.lock" timeout 1800 $q eval "${suite_args[@]}" --plans \
      >> "$out/joint_suite_all.log" 2>&1 || true
    jobs_=() tags=()  # the strongest presets first, so that an interrupted run has the rows that decide the table
    strongest_first=($(printf '%s\n' "${joint_presets[@]}" | tac))
    if [[ " $parts " == *" recipes "* ]]; then  # the recipes four to a process, then each preset at the 0.3 tokens
      for ((r = 0; r < ${#plans[@]}; r += 4)); do
        jobs_+=("--plans ${plans[*]:r:4}") tags+=("recipes$r")
      done
      if [ ${#t30s[@]} -gt 0 ]; then
        for p in "${strongest_first[@]}"; do
          jobs_+=("--plans $p --budgets ${t30s[*]}") tags+=("${p}_b0.3")
        done
      fi
    fi
    if [[ " $parts " == *" fixed "* ]]; then
      for p in "${strongest_first[@]}"; do
        jobs_+=("--plans $p --budgets 64 128") tags+=("${p}_64_128")
        jobs_+=("--plans $p --budgets 192") tags+=("${p}_192")
      done
    fi
    running=0
    for i in "${!jobs_[@]}"; do
      timeout 3600 $q eval "${suite_args[@]}" ${jobs_[i]} > "$out/joint_suite_${tags[i]}.log" 2>&1 &
      running=$((running + 1))
      if [ "$running" -ge "${SUITE_PROCS:-6}" ]; then wait -n || true; running=$((running - 1)); fi
    done
    wait
    stamp "report"
    joint_report
    stamp "suite ($parts) done" && touch "$out/joint_suite.done" ;;
  joint_fp)
    # The full-precision ablation of issue 17: the same profile measured in bf16 (same grid, interaction terms and
    # batch; no latency curve), its recipes at 64/128/192 tokens and budget 0.3 (monotone fit, not refined), and
    # those recipes on the suite's low-bit model beside everything else; then the report. It may run beside
    # joint_suite (the testbed's forward is launch-bound; no figure of either depends on timing).
    bf16_config
    prof="$out/testbed_joint_fp.json" suite_args=("${joint_suite_args[@]}" --resume)
    stamp "full-precision profile on ${RANKS:-4} ranks"
    [ -f "$prof" ] || timeout 3600 torchrun --standalone --nproc_per_node "${RANKS:-4}" -m quota.cli.main profile \
      -o "$prof" --quant "$out/bf16.json" --grid-steps "${GRID_STEPS:-18}" --interactions "${INTERACTIONS:-4}" \
      --batch-size "${BATCH:-64}" --resume --no-latency --selections "${FP_SELECTIONS:-topk,topk+merge8,divprune,cdpruner}" \
      > "$out/joint_fp_profile.log" 2>&1 || true
    fp_plans=()
    for k in 64 128 192 b0.3; do
      budget_target "$k"
      $q solve --profile "$prof" --solver dp "${target[@]}" -o "$out/recipe_fp_$k.json" > /dev/null \
        && fp_plans+=("recipe:$out/recipe_fp_$k.json")
    done
    stamp "suite: the full-precision profile's ${#fp_plans[@]} recipes on the low-bit model"
    [ ${#fp_plans[@]} -gt 0 ] && { timeout 3600 $q eval "${suite_args[@]}" --plans "${fp_plans[@]}" \
      > "$out/joint_fp_suite.log" 2>&1 || true; }
    joint_report
    stamp "full-precision ablation done" && touch "$out/joint_fp.done" ;;
  warm)
    stamp "quantizing the testbed into the cache, alone"
    timeout 1800 $q quantize --model testbed --out "$out/warm_quantized" --overwrite > "$out/warm.log" 2>&1 || true
    rm -rf "$out/warm_quantized"  # only the cache entry matters
    stamp "quantized" ;;
  joint_all)
    # Issue 17 in one detached run: warm; then, side by side, joint_fp (unless JOINT_FP=0), joint_profile (its
    # refined solves) and the suite's rows that need no recipe (SUITE_PROCS_FIXED processes, default 4); once the
    # refined recipes exist, their rows and the presets at their 0.3 tokens; then one report of every row.
    # With the profile already in OUT_DIR (testbed_joint.json) only its validation and refined solves run.
    bash "$0" warm "$out"
    [ "${JOINT_FP:-1}" = 0 ] || bash "$0" joint_fp "$out" > "$out/joint_fp.out" 2>&1 &
    SUITE_PARTS=fixed SUITE_PROCS="${SUITE_PROCS_FIXED:-4}" bash "$0" joint_suite "$out" > "$out/joint_suite_fixed.out" 2>&1 &
    bash "$0" joint_profile "$out" > "$out/joint_profile.out" 2>&1
    SUITE_PARTS=recipes bash "$0" joint_suite "$out" > "$out/joint_suite.out" 2>&1
    wait
    joint_report
    date +"%T all done" >> "$out/joint.log" && touch "$out/joint_all.done" ;;
  *) echo "unknown section $section" >&2; exit 2 ;;
esac
