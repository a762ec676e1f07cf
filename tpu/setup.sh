#!/usr/bin/env bash
# Prepares the TPU VMs: Node 20, this checkout at its current commit (rsync of the tree, as the orchestrator
# does), then scripts/setup.sh there (Debian packages, npm ci: @tensorflow/tfjs-node installs, the VMs reach
# the internet), and dalle-mini's JAX stack for the command stages.
#   bash tpu/setup.sh [tpu-a tpu-b]
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=("$@"); [ $# -eq 0 ] && hosts=(tpu-a tpu-b)
for host in "${hosts[@]}"; do
  eval "$(node tpu/hosts.mjs "$host")"
  # every worker of the slice (a v3-8 has one): each has its own disk
  ips=$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" --project="$PROJECT" --format='value[delimiter=" "](networkEndpoints[].accessConfig.externalIp)')
  for ip in $ips; do
    ssh_opts=(-i "$KEY" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=20)
    remote() { ssh "${ssh_opts[@]}" "$USER_NAME@$ip" -- "$@"; }
    echo "$host ($ip): Node 20"
    remote 'command -v node >/dev/null && node -e "process.exit(+process.versions.node.split(\".\")[0] < 20)" || (curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash - && sudo apt-get install -y nodejs)'
    echo "$host ($ip): the tree at $(git rev-parse --short HEAD)"
    rsync -az --delete --exclude=/node_modules --exclude=/.git/ --exclude=/runs/ -e "ssh ${ssh_opts[*]}" ./ "$USER_NAME@$ip:$WORK/code/"
    git rev-parse HEAD | remote "cat > $WORK/code/.minidalle-commit"
    echo "$host ($ip): scripts/setup.sh (npm ci included)"
    remote "cd $WORK/code && bash scripts/setup.sh"
    echo "$host ($ip): JAX for TPU and dalle-mini (command stages)"
    remote 'pip install -q "jax[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && (test -d dalle-mini || git clone -q https://github.com/borisdayma/dalle-mini) && pip install -q -e "dalle-mini[dev]"'
  done
done
