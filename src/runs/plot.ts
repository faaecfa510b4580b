/**
 * Training curves as a chart: a vega-lite spec compiled to vega, rendered to SVG by vega's
 * headless `View.toSVG()`, and rasterised to PNG by resvg. Top panel: the training loss per
 * optimizer step and the validation loss at each evaluation; bottom panel: the validation
 * metrics (accuracy and macro-F1 for classification, perplexity for language modelling).
 */
import { Resvg } from "@resvg/resvg-js";
import { View, parse } from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

/** One point of a curve. */
export interface CurvePoint {
  readonly step: number;
  readonly value: number;
  /** Series name, e.g. `"train loss"`. */
  readonly series: string;
}

export interface CurveData {
  /** Loss-like series (same scale): training loss per step, validation loss per evaluation. */
  readonly loss: readonly CurvePoint[];
  /** Metric series (accuracy, F1, perplexity) per evaluation; may be empty. */
  readonly metrics: readonly CurvePoint[];
  /** Chart title (run name, model and dataset). */
  readonly title: string;
}

/** Fonts tried in order by the SVG and by the PNG renderer (the first one installed wins). */
const FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif";

/** Steps between kept training-loss points, so a long run's chart stays small (≤ ~1000 points). */
function thin(points: readonly CurvePoint[], max = 1000): CurvePoint[] {
  if (points.length <= max) return [...points];
  const every = Math.ceil(points.length / max);
  return points.filter((_, i) => i % every === 0 || i === points.length - 1);
}

/** Series drawn faintly (raw per-step values under their smoothed version). */
export const FAINT_SERIES = "train loss";

/** The vega-lite spec of the curves (exported so tests and users can inspect it). */
export function curvesSpec(data: CurveData): TopLevelSpec {
  const last = Math.max(1, ...data.loss.map((p) => p.step), ...data.metrics.map((p) => p.step));
  const x = { field: "step", type: "quantitative" as const, title: "optimizer step", scale: { domain: [0, last] } };
  const color = { field: "series", type: "nominal", title: null } as const;
  const points = (series: string) => ({ transform: [{ filter: { field: "series", oneOf: [series] } }], mark: { type: "point" as const, filled: true, size: 30 } });
  const lossPanel = {
    width: 560,
    height: 220,
    data: { values: thin(data.loss) },
    encoding: { x, y: { field: "value", type: "quantitative" as const, title: "loss" }, color },
    layer: [
      { mark: { type: "line" as const, strokeWidth: 1.5 }, encoding: { opacity: { condition: { test: `datum.series === '${FAINT_SERIES}'`, value: 0.3 }, value: 1 } } },
      points("validation loss"),
    ],
  };
  const metricPanel = {
    width: 560,
    height: 160,
    data: { values: [...data.metrics] },
    mark: { type: "line", point: true, strokeWidth: 1.5 },
    encoding: { x, y: { field: "value", type: "quantitative", title: "validation", scale: { zero: false } }, color },
  } as const;
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: data.title, font: FONT },
    background: "white",
    config: { font: FONT, legend: { orient: "right", labelLimit: 260 } },
    vconcat: data.metrics.length > 0 ? [lossPanel, metricPanel] : [lossPanel],
    resolve: { scale: { color: "independent" } },
  } as TopLevelSpec;
}

/** The chart as an SVG document. */
export async function renderCurvesSvg(data: CurveData): Promise<string> {
  return vegaLiteSvg(curvesSpec(data));
}

/** Any vega-lite spec as an SVG document (headless vega; the fonts of the curves unless the spec sets its own). */
export async function vegaLiteSvg(spec: object): Promise<string> {
  const withFont = { background: "white", ...spec, config: { font: FONT, ...((spec as { config?: object }).config ?? {}) } };
  const vg = compile(withFont as TopLevelSpec).spec;
  const view = new View(parse(vg), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG and PNG of any vega-lite spec (the search's Pareto plot, for one). */
export async function renderVegaLite(spec: object): Promise<{ svg: string; png: Uint8Array }> {
  const svg = await vegaLiteSvg(spec);
  return { svg, png: svgToPng(svg) };
}

/** An SVG document rasterised to PNG (white background, `scale`× the SVG's pixel size). */
export function svgToPng(svg: string, scale = 2): Uint8Array {
  const r = new Resvg(svg, { background: "white", fitTo: { mode: "zoom", value: scale }, font: { loadSystemFonts: true } });
  return new Uint8Array(r.render().asPng());
}

/** SVG and PNG of the training curves. */
export async function renderCurves(data: CurveData): Promise<{ svg: string; png: Uint8Array }> {
  const svg = await renderCurvesSvg(data);
  return { svg, png: svgToPng(svg) };
}
