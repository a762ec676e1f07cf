import type { StageSpec, WorkerEvent } from './protocol.js';

export interface StageIO {
  onEvent(event: WorkerEvent): void;
  onOutput(line: string, stream: 'stdout' | 'stderr'): void;
}

export interface StageProcess {
  /** Process id of the worker (on its host). */
  pid?: number;
  /** Resolves when the worker has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Asks the worker to stop gracefully (SIGTERM → final checkpoint); `force` kills it. */
  stop(force?: boolean): void;
}

/** Runs `minidalle worker` for one stage on one host. */
export interface Executor {
  readonly host: string;
  start(spec: StageSpec, io: StageIO): StageProcess;
}
