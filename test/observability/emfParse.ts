/**
 * Reads EMF log lines back into the metrics CloudWatch would extract, checking each line against
 * AWS's "Specification: Embedded metric format" independently of contracts/metrics.ts (so a
 * formatter bug is not mirrored here): the root is one JSON object with `_aws.Timestamp` (a number)
 * and `_aws.CloudWatchMetrics` (directives of Namespace, Dimensions, Metrics); every referenced
 * dimension is a string root member, every metric a number or an array of 1–100 numbers; a
 * directive holds at most 100 metrics and a dimension set at most 30 names; units come from the
 * spec's list.
 */

/** The units the specification lists. */
const UNITS = new Set([
  "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
  "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
  "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
  "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
]);

export interface ExtractedMetric {
  namespace: string;
  name: string;
  unit: string;
  dimensions: Record<string, string>;
  values: number[];
  timestamp: number;
}

/** The metrics of one EMF line; throws with the reason when the line is not valid EMF. */
export function parseEmfLine(line: string): ExtractedMetric[] {
  const root = JSON.parse(line) as Record<string, unknown>;
  if (typeof root !== "object" || root === null || Array.isArray(root)) throw new Error("EMF: the root must be a JSON object");
  const aws = root._aws as { Timestamp?: unknown; CloudWatchMetrics?: unknown } | undefined;
  if (typeof aws !== "object" || aws === null) throw new Error("EMF: missing _aws");
  if (typeof aws.Timestamp !== "number") throw new Error("EMF: _aws.Timestamp must be a number");
  if (!Array.isArray(aws.CloudWatchMetrics)) throw new Error("EMF: _aws.CloudWatchMetrics must be an array");
  const out: ExtractedMetric[] = [];
  for (const d of aws.CloudWatchMetrics as Record<string, unknown>[]) {
    if (typeof d.Namespace !== "string" || d.Namespace.length === 0 || d.Namespace.length > 1024) throw new Error("EMF: Namespace must be a 1-1024 character string");
    if (!Array.isArray(d.Dimensions)) throw new Error("EMF: Dimensions must be an array of arrays");
    if (!Array.isArray(d.Metrics) || d.Metrics.length > 100) throw new Error("EMF: Metrics must be an array of at most 100");
    const sets = d.Dimensions as unknown[];
    for (const set of sets) {
      if (!Array.isArray(set) || set.length > 30) throw new Error("EMF: a dimension set is an array of at most 30 names");
      for (const name of set) {
        if (typeof name !== "string") throw new Error("EMF: dimension names are strings");
        if (typeof root[name] !== "string") throw new Error(`EMF: dimension ${name} has no string root member`);
      }
    }
    for (const m of d.Metrics as Record<string, unknown>[]) {
      if (typeof m.Name !== "string" || m.Name.length === 0) throw new Error("EMF: a metric needs a Name");
      const unit = m.Unit ?? "None";
      if (typeof unit !== "string" || !UNITS.has(unit)) throw new Error(`EMF: unit ${String(unit)} is not in the specification`);
      const raw = root[m.Name];
      const values = typeof raw === "number" ? [raw] : Array.isArray(raw) ? raw : undefined;
      if (!values || values.length === 0 || values.length > 100 || values.some((v) => typeof v !== "number" || !Number.isFinite(v))) {
        throw new Error(`EMF: metric ${m.Name} needs a number or 1-100 numbers as root member`);
      }
      for (const set of sets as string[][]) {
        out.push({
          namespace: d.Namespace,
          name: m.Name,
          unit,
          dimensions: Object.fromEntries(set.map((n) => [n, root[n] as string])),
          values: values as number[],
          timestamp: aws.Timestamp,
        });
      }
    }
  }
  return out;
}

/** Lines that carry `_aws` (the others are ordinary logs). */
export function emfLines<T extends object>(lines: T[]): T[] {
  return lines.filter((l) => "_aws" in l);
}

/** A metric's identity as CloudWatch stores it: namespace, name and the dimension names. */
export function metricIdentity(namespace: string, name: string, dimensionNames: readonly string[]): string {
  return `${namespace}|${name}|${[...dimensionNames].sort().join(",")}`;
}
