/** Errors a user can act on. The CLI prints `message` as one paragraph; the stack only with --verbose. */
export class MinidalleError extends Error {
  override name = 'MinidalleError';
  /** Process exit code the CLI uses for this error. */
  exitCode = 1;
}

/** Where in which file a problem is. `line`/`column` are 1-based. */
export interface SourceLocation {
  file: string;
  line?: number;
  column?: number;
}

export interface ConfigProblem {
  /** Key path inside the experiment (`stages.vqgan.with.steps`), empty for the whole file. */
  path: (string | number)[];
  message: string;
  location?: SourceLocation;
  /** Where the value came from when not from a file (`command-line override 'a.b=1'`). */
  origin?: string;
}

export function formatLocation(loc: SourceLocation): string {
  if (loc.line === undefined) return loc.file;
  return `${loc.file}:${loc.line}${loc.column === undefined ? '' : `:${loc.column}`}`;
}

export function formatPath(path: (string | number)[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

export function formatProblem(p: ConfigProblem): string {
  const where = p.origin ?? (p.location ? formatLocation(p.location) : undefined);
  const key = p.path.length > 0 ? `${formatPath(p.path)}: ` : '';
  return `${where ? `${where}: ` : ''}${key}${p.message}`;
}

/** One or more problems in an experiment or project config; every one names its file, line and key. */
export class ConfigError extends MinidalleError {
  override name = 'ConfigError';
  override exitCode = 2;
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
  }
}
