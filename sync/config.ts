/** The sync Lambda's configuration: read once, checked once, then passed in. */

export interface SyncConfig {
  /** EKS cluster name, matched against the `eks:eks-cluster-name` instance tag. */
  readonly clusterName: string;
  /** Karpenter NodePools whose nodes hold models, matched against `karpenter.sh/nodepool`. */
  readonly nodePools: readonly string[];
  /** The only bucket whose events are accepted. */
  readonly modelsBucket: string;
  readonly region: string;
  /**
   * SSM delivery timeout (`TimeoutSeconds`) and execution timeout (`executionTimeout`), each.
   * @defaultValue 900
   */
  readonly commandTimeoutSeconds?: number;
  /**
   * Sends per instance, the first included.
   * @defaultValue 3
   */
  readonly maxAttempts?: number;
  /**
   * Wait between `GetCommandInvocation` rounds and before a retry.
   * @defaultValue 3000
   */
  readonly pollIntervalMs?: number;
}

export type ResolvedSyncConfig = Required<SyncConfig>;

function isPositiveInt(n: number, min: number, max: number): boolean {
  return Number.isInteger(n) && n >= min && n <= max;
}

/** Apply defaults and reject every invalid field at once. */
export function resolveConfig(config: SyncConfig): ResolvedSyncConfig {
  const resolved: ResolvedSyncConfig = {
    clusterName: config.clusterName,
    nodePools: [...(config.nodePools ?? [])],
    modelsBucket: config.modelsBucket,
    region: config.region,
    commandTimeoutSeconds: config.commandTimeoutSeconds ?? 900,
    maxAttempts: config.maxAttempts ?? 3,
    pollIntervalMs: config.pollIntervalMs ?? 3000,
  };
  const problems: string[] = [];
  for (const field of ["clusterName", "modelsBucket", "region"] as const) {
    if (typeof resolved[field] !== "string" || resolved[field].trim() === "") problems.push(`${field} is empty`);
  }
  if (resolved.nodePools.length === 0 || resolved.nodePools.some((p) => typeof p !== "string" || p.trim() === "")) {
    problems.push("nodePools must list at least one non-empty NodePool name");
  }
  // SSM's bounds: TimeoutSeconds >= 30, executionTimeout <= 172800 (48 h).
  if (!isPositiveInt(resolved.commandTimeoutSeconds, 30, 172_800)) {
    problems.push("commandTimeoutSeconds must be an integer in [30, 172800]");
  }
  if (!isPositiveInt(resolved.maxAttempts, 1, 10)) problems.push("maxAttempts must be an integer in [1, 10]");
  if (!isPositiveInt(resolved.pollIntervalMs, 0, 60_000)) problems.push("pollIntervalMs must be an integer in [0, 60000]");
  if (problems.length > 0) throw new Error(`invalid sync configuration: ${problems.join("; ")}`);
  return resolved;
}

function optionalInt(env: Readonly<Record<string, string | undefined>>, name: string, problems: string[]): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return undefined;
  if (!/^\d+$/.test(raw.trim())) {
    problems.push(`${name} must be a whole number`);
    return undefined;
  }
  return Number(raw.trim());
}

/**
 * Read the configuration from the Lambda environment. Required: CLUSTER_NAME, NODE_POOLS (comma
 * list), MODELS_BUCKET, AWS_REGION (set by Lambda itself). Optional: COMMAND_TIMEOUT_SECONDS,
 * MAX_ATTEMPTS, POLL_INTERVAL_MS.
 */
export function configFromEnv(env: Readonly<Record<string, string | undefined>>): ResolvedSyncConfig {
  const missing = ["CLUSTER_NAME", "NODE_POOLS", "MODELS_BUCKET", "AWS_REGION"].filter(
    (name) => (env[name] ?? "").trim() === "",
  );
  const nodePools = (env.NODE_POOLS ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");
  if (!missing.includes("NODE_POOLS") && nodePools.length === 0) missing.push("NODE_POOLS");
  const problems: string[] = [];
  if (missing.length > 0) problems.push(`missing environment variable(s): ${missing.join(", ")}`);
  const commandTimeoutSeconds = optionalInt(env, "COMMAND_TIMEOUT_SECONDS", problems);
  const maxAttempts = optionalInt(env, "MAX_ATTEMPTS", problems);
  const pollIntervalMs = optionalInt(env, "POLL_INTERVAL_MS", problems);
  if (problems.length > 0) throw new Error(`sync Lambda configuration: ${problems.join("; ")}`);
  return resolveConfig({
    clusterName: (env.CLUSTER_NAME ?? "").trim(),
    nodePools,
    modelsBucket: (env.MODELS_BUCKET ?? "").trim(),
    region: (env.AWS_REGION ?? "").trim(),
    commandTimeoutSeconds,
    maxAttempts,
    pollIntervalMs,
  });
}
