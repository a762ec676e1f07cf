#!/usr/bin/env bash
# Shows each TPU VM's state (READY, PREEMPTED, …), whether ssh answers, the commit it has, and what
# `minidalle hosts` sees.
#   bash tpu/check.sh [tpu-a tpu-b]
set -uo pipefail
cd "$(dirname "$0")/.."
hosts=("$@"); [ $# -eq 0 ] && hosts=(tpu-a tpu-b)
for host in "${hosts[@]}"; do
  eval "$(node tpu/hosts.mjs "$host")"
  state=$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" --project="$PROJECT" --format='value(state)' 2>/dev/null || echo NOT_FOUND)
  ip=$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" --project="$PROJECT" --format='value(networkEndpoints[0].accessConfig.externalIp)' 2>/dev/null || true)
  commit=-
  if [ "$state" = READY ] && [ -n "$ip" ]; then
    commit=$(ssh -i "$KEY" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 \
      "$USER_NAME@$ip" -- cat "$WORK/code/.minidalle-commit" 2>/dev/null || echo 'no answer / not set up')
  fi
  echo "$host: $NAME $state ${ip:-no ip} code: $commit"
done
[ -f minidalle.config.yaml ] && npx minidalle hosts
