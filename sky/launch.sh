# Sourced by sky/train.yaml and sky/pipeline.yaml: `launch STAGE` runs that stage of $SEM on this
# node with $OVERRIDES ("key=value key=value"), as one process through `mlflow run` when the task
# has one GPU on one node, and through torchrun over every GPU of every node otherwise
# (resources `accelerators: H100:8`, `num_nodes: 2`): SkyPilot gives each node the node list,
# its rank and its GPU count, and node 0 (the first IP) hosts the rendezvous. Every node runs
# this; rank 0 alone opens MLflow runs and writes the adapter (docs/gpus-and-cloud.md).
launch() {
  local stage=$1 extra=${2:-}
  local overrides="$extra${extra:+ }${OVERRIDES:-}"
  local nodes=${SKYPILOT_NUM_NODES:-1} gpus=${SKYPILOT_NUM_GPUS_PER_NODE:-1}
  if [ "$nodes" -le 1 ] && [ "$gpus" -le 1 ]; then
    mlflow run . -e "$stage" --env-manager local -P sem="$SEM" -P overrides="$overrides"
    return
  fi
  local _words _sets=()
  read -r -a _words <<< "$overrides"   # no glob expansion: [q_proj, v_proj] stays as written
  for _o in "${_words[@]}"; do _sets+=(--set "$_o"); done
  torchrun --nnodes "$nodes" --nproc_per_node "$gpus" --node_rank "${SKYPILOT_NODE_RANK:-0}" \
    --master_addr "$(head -n1 <<< "$SKYPILOT_NODE_IPS")" --master_port "${MASTER_PORT:-29500}" \
    -m opensem "$stage" --sem "$SEM" "${_sets[@]}"
}
