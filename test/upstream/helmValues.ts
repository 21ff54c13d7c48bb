/**
 * Checks Helm values against a chart's vendored values.yaml (charts/<chart>-<version>/values.yaml):
 * a key the chart does not have is silently ignored by Helm, so the setting is lost without a word.
 *
 * Which subtrees are free-form is read from values.yaml itself, by how Helm and Go templates can use it:
 * - a default of {} / null: the chart has no structure there to address (nodeSelector: {}, resources: {});
 * - a list: Helm replaces lists whole when merging values (it merges maps only), so a list's items are
 *   the template's to interpret, not keys of the chart;
 * - a map with a key that is not a Go template identifier (e.g. `kubernetes.io/os: linux`): templates can
 *   only reach such a map as a whole (toYaml/range/index), so it is data, e.g. a label map.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";

export const CHARTS_DIR = path.join(__dirname, "charts");

export interface ValuesProblem {
  path: string;
  message: string;
}

const GO_IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

function join(p: string, k: string): string {
  return GO_IDENT.test(k) ? (p ? `${p}.${k}` : k) : `${p}[${JSON.stringify(k)}]`;
}

/** Why the chart's default at this node leaves everything below it to the user, or undefined. */
export function freeFormReason(d: unknown): string | undefined {
  if (d === null) return "default is null";
  if (Array.isArray(d)) return "a list (Helm replaces lists whole)";
  if (isMap(d)) {
    const keys = Object.keys(d);
    if (keys.length === 0) return "default is {}";
    const data = keys.find((k) => !GO_IDENT.test(k));
    if (data !== undefined) return `a data map (key ${JSON.stringify(data)} is not addressable from a template)`;
  }
  return undefined;
}

/** Every key path in `values` that `defaults` (a chart's values.yaml) does not have. */
export function valuesProblems(values: unknown, defaults: unknown, p = ""): ValuesProblem[] {
  if (freeFormReason(defaults) !== undefined) return [];
  if (isMap(defaults)) {
    if (!isMap(values)) return [{ path: p || "<root>", message: `the chart has a map here, got ${JSON.stringify(values)}` }];
    const out: ValuesProblem[] = [];
    for (const [k, v] of Object.entries(values)) {
      const at = join(p, k);
      if (!Object.prototype.hasOwnProperty.call(defaults, k)) out.push({ path: at, message: "not a key of the chart's values.yaml (Helm would ignore it)" });
      else out.push(...valuesProblems(v, defaults[k], at));
    }
    return out;
  }
  // A scalar default: a map or list given here cannot be what the template expects.
  if (isMap(values) || Array.isArray(values)) return [{ path: p, message: `the chart has a scalar here (${JSON.stringify(defaults)}), got ${Array.isArray(values) ? "a list" : "a map"}` }];
  return [];
}

/** The chart's name as Helm knows it: the last segment of a repo chart name or an oci:// reference. */
export function chartName(chart: string): string {
  return chart.replace(/\/+$/, "").split("/").pop()!;
}

export function vendoredValuesPath(chart: string, version: string): string {
  return path.join(CHARTS_DIR, `${chartName(chart)}-${version}`, "values.yaml");
}

export function loadChartDefaults(chart: string, version: string): unknown {
  const file = vendoredValuesPath(chart, version);
  if (!fs.existsSync(file)) throw new Error(`no vendored values.yaml for chart ${chart} ${version} (expected ${path.relative(process.cwd(), file)})`);
  return yaml.load(fs.readFileSync(file, "utf8")) ?? {};
}
