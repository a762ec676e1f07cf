import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Tests that spawn the CLI run the compiled dist/ (as users do); `npm test` builds it first. */
export default function setup(): void {
  const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` (npm test does it for you)`);
}
