import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { zodProblems } from './experiment.js';
import { YamlSource } from './yaml-source.js';

export const HostSchema = z
  .object({
    kind: z.literal('local').describe('where the host runs stages; only `local` is available in this version'),
    description: z.string().optional(),
  })
  .strict();

export const ProjectConfigSchema = z
  .object({
    runs_dir: z.string().default('runs').describe('local run store, relative to the project directory'),
    max_parallel: z.number().int().positive().default(2).describe('stages run at once'),
    hosts: z.record(z.string(), HostSchema).default({}).describe('hosts inventory; `local` always exists'),
    plugins: z.array(z.string()).default([]).describe('npm packages that provide more plugins'),
  })
  .strict();

export type ProjectConfig = z.output<typeof ProjectConfigSchema> & {
  /** Directory of the config file (or the directory searched from). */
  projectDir: string;
  /** The file it came from, if any. */
  file?: string;
  /** Absolute runs directory. */
  runsDir: string;
};

const MODULE = 'minidalle';

/**
 * Finds the project config with cosmiconfig (`minidalle.config.{ts,js,mjs,json,yaml}`, `.minidallerc*`, or the
 * `minidalle` key of package.json), from `cwd` upwards. No file means the defaults.
 */
export async function loadProjectConfig(cwd = process.cwd()): Promise<ProjectConfig> {
  const { cosmiconfig } = await import('cosmiconfig');
  const explorer = cosmiconfig(MODULE, {
    searchStrategy: 'project',
    searchPlaces: [
      'package.json',
      `.${MODULE}rc`,
      `.${MODULE}rc.json`,
      `.${MODULE}rc.yaml`,
      `.${MODULE}rc.yml`,
      `.${MODULE}rc.js`,
      `.${MODULE}rc.mjs`,
      `${MODULE}.config.js`,
      `${MODULE}.config.mjs`,
      `${MODULE}.config.ts`,
      `${MODULE}.config.json`,
      `${MODULE}.config.yaml`,
      `${MODULE}.config.yml`,
    ],
  });
  let found: Awaited<ReturnType<typeof explorer.search>>;
  try {
    found = await explorer.search(cwd);
  } catch (err) {
    throw new ConfigError([{ path: [], message: `cannot read the project config: ${(err as Error).message.split('\n')[0]}`, location: { file: cwd } }]);
  }
  const raw: unknown = found?.isEmpty ? {} : (found?.config ?? {});
  const parsed = ProjectConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const file = found!.filepath;
    const problems = zodProblems(parsed.error, ProjectConfigSchema, []);
    // YAML and JSON files can say the line; JS/TS configs only the key.
    const src = /\.(ya?ml|json)$|rc$/.test(file) && !file.endsWith('package.json') ? YamlSource.read(file) : undefined;
    throw new ConfigError(problems.map((p) => ({ ...p, location: src ? src.locate(p.path) : { file } })));
  }
  const projectDir = found ? dirname(found.filepath) : resolve(cwd);
  return { ...parsed.data, projectDir, file: found?.filepath, runsDir: resolve(projectDir, parsed.data.runs_dir) };
}
