/**
 * What a model loader says when it is handed a checkpoint it cannot read directly (a `.ckpt`, `.bin`,
 * `.msgpack`, or a folder holding only those): the exact `minidalle convert` command that makes a
 * model folder of it. Kept free of the converter's imports, so loaders stay light.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const CHECKPOINT_FILE = /\.(ckpt|bin|pt|pth|msgpack)$|\.bin\.index\.json$/;

/** Quotes an argument for a POSIX shell when it needs it. */
function shellArg(s: string): string {
  return /^[\w./@:+=-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** The command that converts `path` into `<path without extension>-minidalle`. */
export function convertCommandFor(path: string): string {
  const clean = path.replace(/\/+$/, '');
  const stem = clean.replace(/\.bin\.index\.json$/, '').replace(/\.(ckpt|bin|pt|pth|msgpack)$/, '');
  return `minidalle convert ${shellArg(clean)} --to ${shellArg(`${stem}-minidalle`)}`;
}

/**
 * What is wrong with handing `path` to a loader, when it is a checkpoint file or a folder whose only
 * weights are checkpoint files (no model.safetensors), with the command that fixes it; null otherwise
 * (the loader's own error applies). The text follows the path: "<path> <problem>".
 */
export function convertProblem(path: string): string | null {
  if (!existsSync(path)) return null;
  const fix = `convert it first with \`${convertCommandFor(path)}\` and load the folder it writes`;
  if (!statSync(path).isDirectory()) return CHECKPOINT_FILE.test(path) ? `is a PyTorch/Flax checkpoint, not a model folder: ${fix}` : null;
  if (existsSync(join(path, 'model.safetensors')) || existsSync(join(path, 'model.safetensors.index.json'))) return null;
  const found = readdirSync(path).filter((f) => CHECKPOINT_FILE.test(f));
  if (existsSync(join(path, 'checkpoints', 'last.ckpt'))) found.push('checkpoints/last.ckpt');
  return found.length ? `has no model.safetensors, only ${found.join(', ')}: ${fix}` : null;
}

/** `convertProblem` as a whole message ("<path> is a … checkpoint …"), or null. */
export function convertHint(path: string): string | null {
  const problem = convertProblem(path);
  return problem ? `${path} ${problem}` : null;
}
