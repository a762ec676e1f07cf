#!/usr/bin/env bash
# Deletes the TPU VMs (and their queued resources, QUEUED=1). The local run store keeps everything that was
# synced back; a VM's disk is gone with it.
#   bash tpu/delete.sh [tpu-a tpu-b]
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=("$@"); [ $# -eq 0 ] && hosts=(tpu-a tpu-b)
for host in "${hosts[@]}"; do
  eval "$(node tpu/hosts.mjs "$host")"
  if [ "${QUEUED:-0}" = 1 ]; then
    gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" --project="$PROJECT" --force --quiet
  else
    gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --project="$PROJECT" --quiet
  fi
done
