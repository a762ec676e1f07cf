/**
 * Bundles the browser code at `npm run build` (after tsc): the report's chart script and the UI's front end,
 * each one self-contained file in dist/web/ with uPlot inside, so nothing is fetched from a CDN at view time.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, 'dist', 'web');
mkdirSync(out, { recursive: true });
const entries = {
  report: join(root, 'src/report/web/report-client.js'),
  ui: join(root, 'src/ui/web/app.js'),
};
await build({
  entryPoints: entries,
  outdir: out,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  minify: true,
  legalComments: 'inline',
  logLevel: 'warning',
});
copyFileSync(join(root, 'node_modules/uplot/dist/uPlot.min.css'), join(out, 'uplot.css'));
