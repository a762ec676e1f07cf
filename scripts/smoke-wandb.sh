#!/usr/bin/env bash
# Manual smoke test against the real W&B (never run by CI: no test reaches W&B). Needs a real key:
#   WANDB_API_KEY=... [WANDB_ENTITY=me] [WANDB_PROJECT=minidalle-smoke] [WANDB_BASE_URL=...] bash scripts/smoke-wandb.sh
# It runs a small counting stage live, one offline and synced afterwards, then pushes and pulls an artifact,
# and prints the W&B pages to look at. Build first (npm run build).
set -euo pipefail
if [ -z "${WANDB_API_KEY:-}" ]; then
  echo "smoke-wandb: set WANDB_API_KEY (https://wandb.ai/authorize); this script talks to the real W&B" >&2
  exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
project="${WANDB_PROJECT:-minidalle-smoke}"
entity_line=""
if [ -n "${WANDB_ENTITY:-}" ]; then entity_line=", entity: ${WANDB_ENTITY}"; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
printf '{"runs_dir":"runs","plugins":["%s/tests/fixtures/plugins/steps.mjs"]}\n' "$repo" > minidalle.config.json
cat > smoke.yaml <<YAML
name: wandb-smoke
tracking:
  tags: [smoke]
  wandb: { project: ${project}${entity_line} }
stages:
  count:
    plugin: counter
    with: { steps: 40, delay_ms: 100 }
YAML
cli=(node "$repo/bin/minidalle.js")

echo "== 1. live: a stage streamed while it runs"
"${cli[@]}" run smoke.yaml
echo "== 2. offline, then minidalle sync"
WANDB_MODE=offline "${cli[@]}" run smoke.yaml --rerun
"${cli[@]}" sync
echo "== 3. ls shows the W&B column"
"${cli[@]}" ls
echo "== 4. artifact push and pull (the last checkpoint, split as dalle-mini does: the counter has only state-<run>)"
run_id="$("${cli[@]}" ls --limit 2 | awk 'NR==3 {print $1}')"
node --input-type=module -e "
import { checkpointArtifacts, pushArtifact, pullArtifact, baseUrlFrom, readState } from '$repo/dist/src/core/tracking/wandb/index.js';
import { readdirSync } from 'node:fs';
const dir = 'runs/$run_id/checkpoints/' + readdirSync('runs/$run_id/checkpoints').filter((d) => d.startsWith('step-')).sort((a, b) => Number(a.slice(5)) - Number(b.slice(5))).at(-1);
const state = await readState('runs/$run_id');
const settings = { baseUrl: baseUrlFrom(), apiKey: process.env.WANDB_API_KEY, entity: state.entity, project: state.project };
const step = Number(dir.split('step-')[1]);
const [first] = await checkpointArtifacts(dir, '$run_id', { step });
const pushed = await pushArtifact({ settings, runId: state.wandb_run_id, ...first });
console.log('pushed', pushed);
const local = await pullArtifact(settings.entity + '/' + settings.project + '/' + pushed.name + ':latest', { cacheDir: '$work/cache', settings });
console.log('pulled into', local, readdirSync(local));
"
echo "== done: open the URLs above; the live and the synced run should each show 40 steps of 'value', system events and output.log"
