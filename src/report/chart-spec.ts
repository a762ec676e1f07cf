/** What a chart shows, as JSON: built in Node from a run's history, drawn in the browser (web/charts.ts). */
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
