# The run step of sky/outcome.yaml, on the GPU node, in the workdir, with .venv activated:
# issue 12's benchmark (`python -m bench outcome`) with an LLM teacher served on the node.
#   1. With TEACHER_MODEL set, vLLM (its own venv: `make setup-vllm`) serves it on
#      127.0.0.1:$TEACHER_PORT; `opensem forge` runs once per SEM with it as the teacher, which
#      fills data/<sem>/cache/teacher; then the server stops, so training gets the whole GPU.
#      With TEACHER_MODEL empty: the offline extractive teacher, as the default pipeline has.
#   2. `python -m bench outcome` with the same teacher settings: its project copies carry that
#      cache (bench/common.py), so their forge sends no request and gets the same pairs.
#   3. The table goes to outcome/outcome.md; every golden answer, the dev results and the
#      reports to outcome/tmp/opensem-outcome/.
# OVERRIDES ("key=value ...") goes to every stage, e.g. recipe=qwen2.5/1.5b_lora_cuda for a
# bigger base; `read -a` splits it without glob expansion. Also read: TEACHER_PORT (8000),
# TEACHER_MAX_LEN (8192, vLLM's --max-model-len), TEACHER_WAIT_S (1800) and VLLM (the vllm
# command; the tests put a stand-in there).
set -euo pipefail

read -r -a _overrides <<< "${OVERRIDES:-}"
sets=()
for _o in "${_overrides[@]}"; do sets+=(--set "$_o"); done
read -r -a sems <<< "${SEMS:-legal debian-policy sqlite}"
port="${TEACHER_PORT:-8000}"
mkdir -p outcome/tmp

teacher=()
if [ -n "${TEACHER_MODEL:-}" ]; then
  url="http://127.0.0.1:$port/v1"
  teacher=(--set forge.teacher.provider=openai --set "forge.teacher.base_url=$url" --set "forge.teacher.model=$TEACHER_MODEL")
  "${VLLM:-.venv-vllm/bin/vllm}" serve "$TEACHER_MODEL" --host 127.0.0.1 --port "$port" \
    --max-model-len "${TEACHER_MAX_LEN:-8192}" > outcome/vllm.log 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  # the first start downloads the weights (about 15 GB for a 7B model): wait up to 30 minutes
  for _ in $(seq "${TEACHER_WAIT_S:-1800}"); do
    if ! kill -0 "$server" 2>/dev/null; then
      echo "outcome: the teacher server (vllm serve $TEACHER_MODEL) exited; the end of outcome/vllm.log:" >&2
      tail -n 20 outcome/vllm.log >&2
      exit 1
    fi
    curl -sf --max-time 5 "$url/models" > /dev/null && break
    sleep 1
  done
  if ! curl -sf --max-time 5 "$url/models" > /dev/null; then
    echo "outcome: the teacher server did not answer on $url within ${TEACHER_WAIT_S:-1800} s; see outcome/vllm.log" >&2
    exit 1
  fi
  for sem in "${sems[@]}"; do
    opensem forge --sem "$sem" "${teacher[@]}" "${sets[@]}"
  done
  kill "$server"          # SIGTERM: vLLM shuts its engine down and frees the GPU
  wait "$server" || true  # killed by us: its exit status is not a failure
  trap - EXIT
fi

TMPDIR="$PWD/outcome/tmp" python -m bench outcome "${sems[@]}" --seeds "${SEEDS:-42,43,44}" "${teacher[@]}" "${sets[@]}" \
  | tee outcome/outcome.md
