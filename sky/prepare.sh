# Sourced by the run step of every sky/*.yaml task, on the node, before its stage runs.
#   1. `opensem doctor` with the task's OVERRIDES, so the plan it prints is the one that trains;
#   2. forged pairs for $SEM: the upload carries data/$SEM/processed/ when you ran forge before
#      launching (.skyignore lets it through). Without them, forge runs here first: free with the
#      offline teacher; with a paid one, forge on your machine first so nothing is paid twice.
# OVERRIDES is "key=value key=value", as the MLflow entry points take it; `read -a` splits it
# without glob expansion (a value such as [q_proj, v_proj] stays as written).
read -r -a _overrides <<< "${OVERRIDES:-}"
_sets=()
for _o in "${_overrides[@]}"; do _sets+=(--set "$_o"); done
opensem doctor --sem "$SEM" "${_sets[@]}"
if [ ! -s "data/$SEM/processed/train.jsonl" ]; then
  echo "sky: no forged pairs for $SEM in the upload; running forge on this node"
  mlflow run . -e forge --env-manager local -P sem="$SEM" -P overrides="${OVERRIDES:-}"
fi
