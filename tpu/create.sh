#!/usr/bin/env bash
# Creates the TPU VMs of tpu/hosts.example.yaml (default: tpu-a and tpu-b) with the project's ssh key in their
# ssh-keys metadata. QUEUED=1 goes through a queued resource, which waits for spot capacity instead of failing.
#   bash tpu/create.sh [tpu-a tpu-b]
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=("$@"); [ $# -eq 0 ] && hosts=(tpu-a tpu-b)
for host in "${hosts[@]}"; do
  eval "$(node tpu/hosts.mjs "$host")"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C minidalle-tpu -f "$KEY"
  sched=(); [ "$SPOT" = spot ] && sched=(--spot); [ "$SPOT" = preemptible ] && sched=(--preemptible)
  meta="ssh-keys=$USER_NAME:$(cat "$KEY.pub")"
  if [ "${QUEUED:-0}" = 1 ]; then
    gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" --zone="$ZONE" --project="$PROJECT" \
      --accelerator-type="$ACCEL" --runtime-version="$RUNTIME" "${sched[@]}" --metadata="$meta"
    echo "$host: queued; watch it with: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE --project=$PROJECT"
  else
    gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --project="$PROJECT" \
      --accelerator-type="$ACCEL" --version="$RUNTIME" "${sched[@]}" --metadata="$meta"
  fi
done
