import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BartConfigSchema, HfConfigError, VqganConfigSchema, readHfConfig, writeHfConfig } from '../../src/ml/hf-config.js';

const dir = mkdtempSync(join(tmpdir(), 'minidalle-cfg-'));

describe('HF config.json', () => {
  it('reads typed fields and writes back every key unchanged', () => {
    const original = {
      architectures: ['DalleBart'], d_model: 1024, encoder_layers: 12, image_vocab_size: 16384,
      use_glu: true, ln_positions: 'normformer', task_specific_params: { summarization: { num_beams: 4 } }, eos_token_id: null,
    };
    const path = join(dir, 'config.json');
    writeFileSync(path, JSON.stringify(original));
    const cfg = readHfConfig(path, BartConfigSchema);
    expect(cfg.d_model).toBe(1024);
    expect(cfg.image_vocab_size).toBe(16384);
    const out = join(dir, 'out.json');
    writeHfConfig(out, cfg, BartConfigSchema);
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(original);
    expect(readFileSync(out, 'utf8').endsWith('}\n')).toBe(true);
  });

  it('errors name the file and the field', () => {
    const path = join(dir, 'bad.json');
    writeFileSync(path, JSON.stringify({ d_model: '1024' }));
    expect(() => readHfConfig(path, BartConfigSchema)).toThrow(HfConfigError);
    expect(() => readHfConfig(path, BartConfigSchema)).toThrow(/bad\.json: field "d_model": .*expected number/);
    writeFileSync(path, JSON.stringify({ ch_mult: [1, 0] }));
    expect(() => readHfConfig(path, VqganConfigSchema)).toThrow(/field "ch_mult\.1"/);
    writeFileSync(path, '{"d_model": 10,');
    expect(() => readHfConfig(path, BartConfigSchema)).toThrow(/bad\.json: not valid JSON/);
    writeFileSync(path, '[1]');
    expect(() => readHfConfig(path, BartConfigSchema)).toThrow(/must be a JSON object/);
    expect(() => readHfConfig(join(dir, 'missing.json'), BartConfigSchema)).toThrow(/missing\.json: cannot read \(ENOENT\)/);
    expect(() => writeHfConfig(join(dir, 'never.json'), { dropout: 2 }, BartConfigSchema)).toThrow(/field "dropout"/);
  });
});
