/**
 * Registers tfjs-core's gradient functions in plain Node.
 *
 * tfjs-core's Node bundle (dist/tf-core.node.js) registers no gradients: the @tensorflow/tfjs union
 * package normally does, and we do not depend on it. The per-file ESM build has them
 * (dist/register_all_gradients.js), but it uses extensionless relative imports that Node's ESM
 * resolver rejects. A resolve hook scoped to that directory appends `.js` (or `/index.js`). The
 * gradient registry and the engine are process-global in tfjs, so gradients registered by that copy
 * serve the bundle every other module uses. Cost: ~1–1.5 s once per process (about 600 modules).
 */
import { register } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';

// A data: URL so the hook works both from dist/ and from TypeScript sources under vitest.
const HOOK = `
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
export async function resolve(specifier, context, next) {
  const parent = context.parentURL;
  if (parent !== undefined && specifier.startsWith('.') && !specifier.endsWith('.js') && parent.includes('/@tensorflow/tfjs-core/dist/')) {
    const file = new URL(specifier + '.js', parent);
    const url = existsSync(fileURLToPath(file)) ? file : new URL(specifier + '/index.js', parent);
    return { url: url.href, format: 'module', shortCircuit: true };
  }
  return next(specifier, context);
}
`;

let loading: Promise<void> | null = null;

/** Idempotent; a no-op when something (tfjs-node, the union package) already registered them. */
export function registerCoreGradients(): Promise<void> {
  if (tf.getGradient(tf.Mean) != null) return Promise.resolve();
  loading ??= (async () => {
    register(`data:text/javascript,${encodeURIComponent(HOOK)}`);
    await import('@tensorflow/tfjs-core/dist/register_all_gradients.js');
    if (tf.getGradient(tf.Mean) == null) throw new Error('tfjs-core gradients did not register (is @tensorflow/tfjs-core exactly 4.22.0?)');
  })();
  return loading;
}
