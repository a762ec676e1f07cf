/**
 * `minidalle convert <file|folder> --to <dir> [--kind vqgan|bart|clip] [--dtype float32|float16] [--config f]`:
 * turns a published checkpoint (taming `.ckpt`, transformers `.bin` / sharded `.bin`, Flax `.msgpack`)
 * into a minidalle model folder and prints what was converted and what was dropped.
 */
import { convertCheckpoint, formatConvertReport, type ConvertOptions } from '../ml/checkpoints/convert.js';

export interface ConvertCommandArgs extends Omit<ConvertOptions, 'onTensor'> {
  log: (line: string) => void;
  progress?: { start(total: number): void; tick(n: number): void; end(): void };
}

export async function convertCommand(args: ConvertCommandArgs): Promise<void> {
  const { log, progress, ...opts } = args;
  let started = false;
  const report = await convertCheckpoint({
    ...opts,
    onTensor: (done, total) => {
      if (!progress) return;
      if (!started) {
        progress.start(total);
        started = true;
      }
      progress.tick(1);
      if (done === total) progress.end();
    },
  });
  for (const line of formatConvertReport(report)) log(line);
}

