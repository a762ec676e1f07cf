/**
 * `minidalle ui [--port 7860] [--host 127.0.0.1] [--model <run|dir>] [--clip <run|dir>] [--token T]`: the local
 * web app. The text → image model (and CLIP) load once, before the server answers, and stay loaded.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

export class UiCommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UiCommandError';
  }
}

export interface UiArgs {
  runsDir: string;
  host: string;
  port: number;
  model?: string;
  clip?: string;
  /** --token, else MINIDALLE_UI_TOKEN */
  token?: string;
  log: (line: string) => void;
}

function isClipFolder(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model_type?: unknown }).model_type === 'clip';
  } catch {
    return false;
  }
}

/** A CLIP folder (config.json with model_type clip), or a run id whose artifacts include one. */
export async function resolveClipDir(clip: string, runsDir: string): Promise<string> {
  if (existsSync(clip) && statSync(clip).isDirectory()) {
    if (isClipFolder(clip)) return resolve(clip);
    throw new UiCommandError(`--clip ${clip}: the folder has no CLIP config.json (model_type "clip"); a CLIP folder holds config.json, model.safetensors and tokenizer.json`);
  }
  const { RunStore } = await import('../core/runs/index.js');
  const store = new RunStore(runsDir, { onWarning: () => {} });
  let run;
  try {
    run = await store.open(clip);
  } catch (err) {
    throw new UiCommandError(`--clip ${clip}: not a folder, and ${(err as Error).message}`);
  }
  const record = await run.read();
  for (const rel of Object.values(record.outputs?.artifacts ?? {})) {
    const dir = resolve(run.dir, rel);
    if (isClipFolder(dir)) return dir;
  }
  throw new UiCommandError(`--clip ${clip}: run ${run.id} (${record.plugin ?? record.kind}, ${record.status}) has no CLIP model artifact; name a finished clip-train run or a CLIP folder`);
}

export async function uiCommand(a: UiArgs): Promise<{ url: string; close(): Promise<void> }> {
  const token = a.token ?? process.env.MINIDALLE_UI_TOKEN;
  const { isLoopback, startUiServer } = await import('../ui/server.js');
  // refuse before loading anything heavy
  if (!isLoopback(a.host) && !token) {
    throw new UiCommandError(`refusing to listen on ${a.host} without a token: other machines could reach the runs and the model. Give --token <secret> (or MINIDALLE_UI_TOKEN), or bind 127.0.0.1`);
  }
  if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new UiCommandError(`--port must be an integer from 0 to 65535, got ${a.port}`);
  const { RunStore } = await import('../core/runs/index.js');
  const store = new RunStore(a.runsDir, { onWarning: () => {}, ...(token ? { secrets: [token] } : {}) });
  let generator: import('../ui/generator.js').WarmGenerator | undefined;
  let compute: string | undefined;
  if (a.model) {
    const { resolveModelDir } = await import('./generate.js');
    const dir = await resolveModelDir(a.model, a.runsDir);
    const clipDir = a.clip ? await resolveClipDir(a.clip, a.runsDir) : undefined;
    const t0 = performance.now();
    const { describeCompute, initCompute } = await import('../ml/backend.js');
    compute = describeCompute(await initCompute());
    const { loadText2Image, readGenerationConfig } = await import('../ml/text2image.js');
    const { WarmGenerator } = await import('../ui/generator.js');
    const defaults = await readGenerationConfig(dir);
    const t2i = await loadText2Image(dir);
    let clip: import('../ml/clip-rank.js').ClipScorer | undefined;
    if (clipDir) {
      const { loadClipScorer } = await import('../ml/clip-rank.js');
      clip = await loadClipScorer(clipDir);
    }
    generator = new WarmGenerator(t2i, defaults, clip);
    a.log(`ui: model ${dir} loaded (${t2i.model.params.count()} parameters)${clipDir ? `, CLIP ${clipDir}` : ''} in ${((performance.now() - t0) / 1000).toFixed(1)} s; compute ${compute}`);
  } else if (a.clip) throw new UiCommandError('--clip re-ranks the demo\'s images: give --model too');
  const server = await startUiServer({ store, host: a.host, port: a.port, ...(token ? { token } : {}), ...(generator ? { generator } : {}), ...(compute ? { compute } : {}) });
  a.log(`ui: ${server.url}/${token ? ' (send the token: open it with ?token=…, or Authorization: Bearer …)' : ''}  runs ${store.root}${generator ? '' : '  (no --model: the demo tab is off)'}`);
  return {
    url: server.url,
    close: async () => {
      await server.close();
      generator?.dispose();
    },
  };
}
