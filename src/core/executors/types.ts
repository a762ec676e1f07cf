import type { StageSpec, WorkerEvent } from './protocol.js';

export interface StageIO {
  onEvent(event: WorkerEvent): void;
  onOutput(line: string, stream: 'stdout' | 'stderr'): void;
}

export interface StageExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the attempt ended because its host did: unreachable past the re-attach timeout, preempted, gone. */
  lost?: string;
}

export interface StageProcess {
  /** Process id of the worker (on this machine; remote executors leave it unset). */
  pid?: number;
  /** Resolves when the worker has exited (or its host was lost). */
  exited: Promise<StageExit>;
  /** Asks the worker to stop gracefully (SIGTERM → final checkpoint); `force` kills it. */
  stop(force?: boolean): void;
}

/** What `minidalle hosts` and placement learn from a host. */
export interface HostProbe {
  answers: boolean;
  /** ssh: `ok` or why not; tpu-vm: the node's state (READY, PREEMPTED, NOT_FOUND, …). */
  state: string;
  detail?: string;
}

/** Runs `minidalle worker` for one stage on one host. */
export interface Executor {
  readonly host: string;
  start(spec: StageSpec, io: StageIO): StageProcess;
  /** Follows a stage a previous orchestrator started on this host, when its worker still runs or left its exit. */
  attach?(runDir: string): Promise<((io: StageIO) => StageProcess) | undefined>;
  probe?(): Promise<HostProbe>;
  /** Closes connections (ssh masters) when the orchestrator is done. */
  close?(): Promise<void>;
}
