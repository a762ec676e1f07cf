import { createHash } from 'node:crypto';
import type { LoadedExperiment } from '../config/experiment.js';

/** JSON with sorted keys, so equal configs hash equally whatever their key order. */
export function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableStringify((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * What decides a stage's result: its plugin and the plugin's `version` (when it declares one), resolved `with:`
 * (defaults applied), the experiment seed, and the fingerprints of the stages it needs. Equal fingerprint +
 * finished run = reusable. A plugin without a version hashes as before versions existed, so its runs stay reusable.
 */
export function stageFingerprints(loaded: LoadedExperiment): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of loaded.order) {
    const stage = loaded.experiment.stages[name]!;
    const version = loaded.pluginVersions?.[stage.plugin];
    const material = {
      plugin: stage.plugin,
      ...(version === undefined ? {} : { plugin_version: version }),
      with: stage.with,
      seed: loaded.experiment.seed,
      needs: Object.fromEntries(stage.needs.map((n) => [n, out[n]])),
    };
    out[name] = createHash('sha256').update(stableStringify(material)).digest('hex');
  }
  return out;
}
