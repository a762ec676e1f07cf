// @ts-check
/**
 * Line charts of run metrics with uPlot, shared by the report and the UI. A chart is a few series, each its own
 * (step, value) points; they are aligned on the union of their steps, and a series without a value at a step
 * spans the gap (train and eval metrics are logged at different steps).
 *
 * @typedef {import('../chart-spec.js').ChartSpec} ChartSpec
 * @typedef {import('../chart-spec.js').SeriesSpec} SeriesSpec
 */
import uPlot from 'uplot';
import { PALETTE } from '../chart-spec.js';

/**
 * @param {readonly SeriesSpec[]} series
 * @returns {uPlot.AlignedData}
 */
export function alignSeries(series) {
  const xs = [...new Set(series.flatMap((s) => s.steps))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    /** @type {(number | null)[]} */
    const col = new Array(xs.length).fill(null);
    s.steps.forEach((x, i) => (col[/** @type {number} */ (index.get(x))] = s.values[i] ?? null));
    return col;
  });
  return /** @type {uPlot.AlignedData} */ ([xs, ...ys]);
}

/** @param {ChartSpec} spec */
export function pointCount(spec) {
  return spec.series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0);
}

/**
 * Draws `spec` into `el`; `el.dataset.points` says how many values are drawn (the tests read it).
 * @param {HTMLElement} el
 * @param {ChartSpec} spec
 * @returns {{ plot: uPlot, update(next: ChartSpec): void }}
 */
export function drawChart(el, spec, width = Math.max(280, el.clientWidth || 420), height = 220) {
  const few = spec.series.every((s) => s.steps.length <= 40);
  /** @type {uPlot.Options} */
  const opts = {
    title: spec.title,
    width,
    height,
    scales: { x: { time: false }, ...(spec.log ? { y: { distr: 3 } } : {}) },
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    axes: [{ label: spec.xLabel ?? 'step' }, { size: 60 }],
    series: [
      { label: spec.xLabel ?? 'step' },
      ...spec.series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true, points: { show: few, size: 4 } })),
    ],
  };
  el.replaceChildren();
  const plot = new uPlot(opts, alignSeries(spec.series), el);
  el.dataset.points = String(pointCount(spec));
  return {
    plot,
    update(next) {
      plot.setData(alignSeries(next.series));
      el.dataset.points = String(pointCount(next));
    },
  };
}
