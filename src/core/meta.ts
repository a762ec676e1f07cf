import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname, platform, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface GitState {
  commit: string;
  branch?: string;
  dirty: boolean;
  /** `git diff HEAD` when dirty (the caller stores it as a file beside run.json). */
  diff?: string;
}

/** Commit and uncommitted changes of the project directory, or undefined outside a git checkout. */
export function gitState(dir: string): GitState | undefined {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 }).trim();
  try {
    const commit = git('rev-parse', 'HEAD');
    const branch = git('rev-parse', '--abbrev-ref', 'HEAD');
    const dirty = git('status', '--porcelain', '--untracked-files=no').length > 0;
    return { commit, branch, dirty, diff: dirty ? git('diff', 'HEAD') : undefined };
  } catch {
    return undefined;
  }
}

/** Installed version of a package, also for packages whose `exports` hide their package.json. */
function packageVersion(require: NodeJS.Require, name: string): string | undefined {
  let dir: string;
  try {
    dir = dirname(require.resolve(name));
  } catch {
    return undefined; // not installed (e.g. the optional tfjs-node)
  }
  for (; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version: string };
      if (pkg.name === name) return pkg.version;
    } catch {
      /* no package.json at this level: go up */
    }
  }
  return undefined;
}

/** Versions that decide what a run computes: ours, Node's, and the numeric/image libraries. */
export function versions(): Record<string, string> {
  const require = createRequire(import.meta.url);
  const ownPkg = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../package.json' : '../../package.json', import.meta.url));
  const out: Record<string, string> = { node: process.version, platform: `${platform()} ${release()}` };
  try {
    out.minidalle = (JSON.parse(readFileSync(ownPkg, 'utf8')) as { version: string }).version;
  } catch {
    /* running from an unusual layout: the version is simply not recorded */
  }
  for (const name of ['@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-node', 'sharp']) {
    const v = packageVersion(require, name);
    if (v) out[name] = v;
  }
  return out;
}

export function hostName(): string {
  return hostname();
}
