/**
 * The browser bundles `npm run build` writes to dist/web/ (src/ui/build-web.mjs): report.js, ui.js, uplot.css.
 * Found from this module's place in the package, whether it runs from src/ (tests) or dist/src/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export class WebAssetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebAssetError';
  }
}

/** The nearest folder above this module whose package.json is minidalle's (the source tree or an installed package). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'minidalle') return dir;
    const up = dirname(dir);
    if (up === dir) throw new WebAssetError('cannot find the minidalle package folder (a package.json named "minidalle") above this module');
    dir = up;
  }
}

const cache = new Map<string, string>();

/** The text of dist/web/<name>. */
export function readWebAsset(name: 'report.js' | 'ui.js' | 'uplot.css'): string {
  const hit = cache.get(name);
  if (hit !== undefined) return hit;
  const file = join(packageRoot(), 'dist', 'web', name);
  if (!existsSync(file)) throw new WebAssetError(`${file} is missing: run \`npm run build\` (it bundles the report's and the UI's browser code)`);
  const text = readFileSync(file, 'utf8');
  cache.set(name, text);
  return text;
}
