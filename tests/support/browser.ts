/**
 * Headless Debian chromium (/usr/bin/chromium) driven by playwright-core: no browser download, no network.
 * Every request a page makes is routed through `guard`: data:/blob: URLs and the allowed origins (a test's own
 * 127.0.0.1 server) pass, anything else is aborted and recorded, so a test can assert nothing left the page.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { PALETTE } from '../../src/report/chart-spec.js';

export const CHROMIUM = '/usr/bin/chromium';

export interface GuardedPage {
  page: Page;
  /** URLs the page tried to fetch that were not allowed (aborted): only data:, blob: and `allowOrigins` (exact URLs or origins) pass */
  blocked: string[];
  /** console errors and uncaught page errors */
  errors: string[];
}

export interface BrowserSession {
  context: BrowserContext;
  open(options?: { allowOrigins?: string[]; headers?: Record<string, string> }): Promise<GuardedPage>;
  close(): Promise<void>;
}

/** A fresh profile each time (playwright passes it as --user-data-dir), removed on close. */
export async function launchChromium(): Promise<BrowserSession> {
  const profile = mkdtempSync(join(tmpdir(), 'minidalle-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async open(options = {}) {
      const page = await context.newPage();
      const blocked: string[] = [];
      const errors: string[] = [];
      const allowed = options.allowOrigins ?? [];
      await page.route('**/*', async (route) => {
        const url = route.request().url();
        const ok = url.startsWith('data:') || url.startsWith('blob:') || allowed.some((o) => url === o || url.startsWith(`${o}/`));
        if (ok) await route.continue();
        else {
          blocked.push(url);
          await route.abort('blockedbyclient');
        }
      });
      if (options.headers) await page.setExtraHTTPHeaders(options.headers);
      page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
      page.on('pageerror', (e) => void errors.push(e.message));
      return { page, blocked, errors };
    },
    async close() {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `source` (a JavaScript function expression) in the page with `arg`. Browser-side code is a string here:
 * the test program is typed for Node, without the DOM's globals.
 */
export async function inPage<T>(page: Page, source: string, arg: unknown = null): Promise<T> {
  return (await page.evaluate(`(${source})(${JSON.stringify(arg)})`)) as T;
}

/**
 * Waits until `source` (a function's source, run as `inPage` runs it) returns true. Not `page.waitForFunction`:
 * while it polls, it evals a string predicate inside the page, which the UI's CSP (`script-src 'self'`) refuses
 * whenever the first check comes out false.
 */
export async function waitInPage(page: Page, source: string, arg: unknown = null, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await inPage<boolean>(page, source, arg))) {
    if (Date.now() > end) throw new Error(`waitInPage: ${source} was still false after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const SERIES_PIXELS = `({ selector, colours }) => [...document.querySelectorAll(selector)].map((el) => {
  const canvas = el.querySelector('canvas');
  if (!canvas || canvas.width === 0 || canvas.height === 0) return false;
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let hits = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] > 100 && colours.some((c) => Math.abs(px[i] - c[0]) < 40 && Math.abs(px[i + 1] - c[1]) < 40 && Math.abs(px[i + 2] - c[2]) < 40)) hits++;
  }
  return hits >= 3;
})`;

function rgb(hex: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];
}

/**
 * For each chart container matching `selector`: whether its canvas holds pixels of a series colour (any of
 * `colours`, default: every palette colour), i.e. a line was drawn, not only axes and grid. Lines that coincide
 * hide each other, so a chart counts when any of its colours shows.
 */
export async function chartsWithSeriesPixels(page: Page, selector: string, colours: readonly string[] = PALETTE): Promise<boolean[]> {
  return inPage<boolean[]>(page, SERIES_PIXELS, { selector, colours: colours.map(rgb) });
}

/** Every <img> matching `selector`: the start of its src, its natural size (0 when it did not load), complete. */
export async function imageSizes(page: Page, selector = 'img'): Promise<{ src: string; w: number; h: number; complete: boolean }[]> {
  return inPage(page, `(selector) => [...document.querySelectorAll(selector)].map((i) => ({ src: i.src.slice(0, 30), w: i.naturalWidth, h: i.naturalHeight, complete: i.complete }))`, selector);
}
