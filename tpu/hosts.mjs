// Prints one host of tpu/hosts.example.yaml (or $MINIDALLE_HOSTS) as shell variables for the tpu/*.sh scripts:
//   eval "$(node tpu/hosts.mjs tpu-a)"  →  NAME ZONE PROJECT ACCEL RUNTIME SPOT USER_NAME KEY WORK
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { parse } from 'yaml';

const file = process.env.MINIDALLE_HOSTS ?? new URL('./hosts.example.yaml', import.meta.url).pathname;
const host = process.argv[2];
const config = parse(readFileSync(file, 'utf8'));
const h = config?.hosts?.[host];
if (!h || h.kind !== 'tpu-vm') {
  console.error(`${file}: no tpu-vm host '${host}' (hosts: ${Object.keys(config?.hosts ?? {}).join(', ')})`);
  process.exit(2);
}
const q = (v) => `'${String(v).replace(/'/g, `'\\''`)}'`;
const key = String(h.identity_file ?? '~/.ssh/minidalle-tpu').replace(/^~\//, `${homedir()}/`);
const vars = {
  NAME: h.name ?? host,
  ZONE: h.zone,
  PROJECT: h.project,
  ACCEL: h.accelerator_type ?? 'v3-8',
  RUNTIME: h.runtime_version ?? 'tpu-ubuntu2204-base',
  SPOT: h.spot ? 'spot' : h.preemptible ? 'preemptible' : '',
  USER_NAME: h.user ?? 'minidalle',
  KEY: key,
  WORK: h.work_dir ?? 'minidalle',
};
for (const [k, v] of Object.entries(vars)) console.log(`${k}=${q(v)}`);
