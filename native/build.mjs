// Builds the native kernels (native/minidalle_native.c → build/Release/minidalle_native.node) with
// node-gyp against the running Node's own headers, so nothing is downloaded. Run by `npm run
// build:native`, which `prepare` (i.e. `npm ci`) calls.
//
// A failed build does not fail the install: minidalle then trains on its wasm kernels alone, several
// times slower, and says so at every stage start. MINIDALLE_NATIVE=require (CI) makes it fail instead.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const required = process.env.MINIDALLE_NATIVE === 'require';

if (process.env.MINIDALLE_NATIVE === 'off') {
  console.log('minidalle native kernels: not built (MINIDALLE_NATIVE=off)');
  process.exit(0);
}

function nodeGyp() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  // Outside npm scripts: the node-gyp that ships inside npm.
  const npmDir = dirname(dirname(createRequire(import.meta.url).resolve('npm/package.json', { paths: [resolve(process.execPath, '../../lib/node_modules')] })));
  return join(npmDir, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
}

const args = ['rebuild', '--directory', here];
// Node's headers next to the running binary (e.g. /usr/include/node for Debian's nodejs): no download.
const prefix = resolve(process.execPath, '..', '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

let gyp;
try {
  gyp = nodeGyp();
} catch (err) {
  gyp = null;
}
const result = gyp ? spawnSync(process.execPath, [gyp, ...args], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' }) : null;
if (result?.status === 0) {
  console.log('minidalle native kernels: built (native/build/Release/minidalle_native.node)');
  process.exit(0);
}
const output = result ? `${result.stdout}\n${result.stderr}` : 'node-gyp was not found';
const errors = output.split('\n').filter((l) => /error|not found|No such file|cannot find/i.test(l) && !/^gyp info/.test(l)).slice(0, 6);
console.error(
  [
    'minidalle native kernels: NOT built. Training will run on the wasm kernels alone (several times slower).',
    ...errors.map((l) => `  ${l.trim()}`),
    'They need a C compiler and OpenBLAS: apt-get install -y g++ make libopenblas-dev, then npm run build:native.',
  ].join('\n'),
);
process.exit(required ? 1 : 0);
