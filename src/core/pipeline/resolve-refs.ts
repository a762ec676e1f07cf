import type { StageOutputs } from '../plugins/types.js';

/** Replaces `${stages.<x>.out}` and `${stages.<x>.artifacts.<name>}` with the paths stage x produced. */
export function resolveStageRefs(value: unknown, inputs: Record<string, StageOutputs>): unknown {
  if (Array.isArray(value)) return value.map((v) => resolveStageRefs(v, inputs));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveStageRefs(v, inputs)]));
  }
  if (typeof value !== 'string') return value;
  return value.replace(/\$\{stages\.([a-z][a-z0-9_-]*)\.(out|artifacts\.([\w.-]+))\}/g, (match, stage: string, what: string, artifact?: string) => {
    const input = inputs[stage];
    if (!input) throw new Error(`${match}: stage '${stage}' has no outputs (is it in needs?)`);
    if (what === 'out') return input.outDir;
    const path = input.artifacts[artifact!];
    if (path === undefined) {
      throw new Error(`${match}: stage '${stage}' produced no artifact '${artifact}' (it produced: ${Object.keys(input.artifacts).join(', ') || 'none'})`);
    }
    return path;
  });
}
