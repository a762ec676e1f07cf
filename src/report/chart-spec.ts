/** What a chart shows, as JSON: built in Node from a run's history, drawn in the browser (web/charts.js). */

/** Series colours, in order: distinct on white and from the grid's grey (the browser tests look for them). */
export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#393b79', '#637939'] as const;
export interface SeriesSpec {
  label: string;
  steps: number[];
  /** null: not a finite number at that step (NaN, Infinity) */
  values: (number | null)[];
}

export interface ChartSpec {
  /** stable within a page: `<run id>:<group>` */
  id: string;
  title: string;
  xLabel?: string;
  /** a log y axis (every value > 0 and spanning decades) */
  log?: boolean;
  series: SeriesSpec[];
}
