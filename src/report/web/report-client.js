// @ts-check
/**
 * The report page's script: draws every chart placeholder from the JSON the page carries.
 * @typedef {import('../chart-spec.js').ChartSpec} ChartSpec
 */
import { drawChart } from './charts.js';

function main() {
  const json = document.getElementById('report-charts')?.textContent ?? '[]';
  /** @type {ChartSpec[]} */
  const list = JSON.parse(json);
  const specs = new Map(list.map((c) => [c.id, c]));
  for (const el of document.querySelectorAll('[data-chart]')) {
    if (!(el instanceof HTMLElement)) continue;
    const spec = specs.get(el.dataset.chart ?? '');
    if (!spec) continue;
    try {
      drawChart(el, spec, Math.max(280, el.clientWidth - 12));
    } catch (err) {
      el.textContent = `chart ${spec.title}: ${/** @type {Error} */ (err).message}`;
      el.dataset.error = '1';
    }
  }
  document.body.dataset.chartsDrawn = String(specs.size);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
else main();
