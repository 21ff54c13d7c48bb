/**
 * The agent's flags (and the env vars the DaemonSet sets), parsed into one settings object. Every
 * problem is reported at once, each naming its flag. No I/O: main.ts acts on the result.
 *
 *   npm run models-agent -- --models-dir DIR --bucket NAME [--endpoint URL] --cache-gb N --port P
 */
import { AGENT_NAMES, AGENT_PORT, checkPinEntry } from "../../../contracts/modelsAgent";

export interface AgentSettings {
  modelsDir: string;
  bucket: string;
  /** An S3 API other than AWS's (s3rver, MinIO …): path-style addressing. */
  endpoint?: string;
  region: string;
  quotaBytes: number;
  port: number;
  host: string;
  token?: string;
  reserveBytes: number;
  reservePercent: number;
  /** Open GETs at once, all downloads together. */
  connections: number;
  /** Bytes per ranged GET. */
  rangeBytes: number;
  /** Start with these pins (undefined: the ones the index kept). */
  pins?: string[];
  /** Serve apply and inventory on a Unix socket too (the node's SSM command); "" = no socket. */
  socket: string;
  /** A second port answering only GET /healthz (the kubelet's probes); undefined = none. */
  healthPort?: number;
  /** How downloads are checked (fetcher.ts): "md5" (default) or "size". */
  verify: "md5" | "size";
}

export const USAGE = `usage: npm run models-agent -- --models-dir DIR --bucket NAME [--endpoint URL] --cache-gb N --port P
  [--host ADDR] [--region R] [--token T] [--reserve-gb N] [--reserve-percent N] [--connections N]
  [--range-mb N] [--pin ENTRY]... [--socket PATH|auto] [--health-port P] [--verify md5|size]
env: MODELS_AGENT_TOKEN (the token when --token is absent), AWS_REGION, and the AWS SDK's credential chain`;

const FLAGS = new Set([
  "--models-dir",
  "--bucket",
  "--endpoint",
  "--region",
  "--cache-gb",
  "--port",
  "--host",
  "--token",
  "--reserve-gb",
  "--reserve-percent",
  "--connections",
  "--range-mb",
  "--pin",
  "--socket",
  "--health-port",
  "--verify",
]);

export class OptionsError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

export function parseAgentArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): AgentSettings {
  const problems: string[] = [];
  const values = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (!FLAGS.has(name)) {
      if (!name.startsWith("--")) {
        problems.push(`'${arg}': unexpected argument (flags are --name value)`);
        continue;
      }
      problems.push(`${name}: unknown flag`);
      // Its value, if it has one, is not another problem.
      if (eq < 0 && argv[i + 1] !== undefined && !argv[i + 1].startsWith("--")) i++;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || (eq < 0 && value.startsWith("--"))) {
      problems.push(`${name}: needs a value`);
      if (value?.startsWith("--")) i--;
      continue;
    }
    values.set(name, [...(values.get(name) ?? []), value]);
  }
  const one = (name: string): string | undefined => {
    const v = values.get(name);
    if (v && v.length > 1 && name !== "--pin") problems.push(`${name}: given ${v.length} times`);
    return v?.[v.length - 1];
  };
  const required = (name: string, what: string): string => {
    const v = one(name);
    if (v === undefined || v === "") problems.push(`${name}: required (${what})`);
    return v ?? "";
  };
  const number = (name: string, fallback: number | undefined, min: number, max: number, integer: boolean): number => {
    const raw = one(name);
    if (raw === undefined) {
      if (fallback === undefined) problems.push(`${name}: required`);
      return fallback ?? NaN;
    }
    const n = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      problems.push(`${name}: must be ${integer ? "an integer" : "a number"} from ${min} to ${max}, got '${raw}'`);
    }
    return n;
  };

  const modelsDir = required("--models-dir", "the folder whose model folders (checkpoints/, loras/ …) the agent keeps");
  const bucket = required("--bucket", "the models bucket");
  if (bucket && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) problems.push(`--bucket: '${bucket}' is not an S3 bucket name`);
  const endpoint = one("--endpoint");
  if (endpoint !== undefined) {
    try {
      const u = new URL(endpoint);
      if (u.protocol !== "http:" && u.protocol !== "https:") problems.push(`--endpoint: must be an http(s) URL, got '${endpoint}'`);
    } catch {
      problems.push(`--endpoint: not a URL: '${endpoint}'`);
    }
  }
  // 0: the whole filesystem less the reserve (a DaemonSet cannot know the array size in advance).
  const cacheGb = number("--cache-gb", undefined, 0, 1_000_000, false);
  const port = number("--port", AGENT_PORT, 0, 65535, true);
  const host = one("--host") ?? "127.0.0.1";
  const token = one("--token") ?? (env[AGENT_NAMES.tokenEnv] || undefined);
  if (token !== undefined && token.length < 16) problems.push(`--token: at least 16 characters (or ${AGENT_NAMES.tokenEnv})`);
  if (token === undefined && !LOOPBACK.has(host)) problems.push(`--token: required when --host is not loopback (${host}); or set ${AGENT_NAMES.tokenEnv}`);
  const reserveGb = number("--reserve-gb", 0, 0, 1_000_000, false);
  const reservePercent = number("--reserve-percent", 0, 0, 99, false);
  const connections = number("--connections", 32, 1, 512, true);
  const rangeMb = number("--range-mb", 64, 1, 5120, true);
  const pins = values.get("--pin");
  for (const p of pins ?? []) {
    const c = checkPinEntry(p);
    if (!c.ok) problems.push(`--pin: '${p}': ${c.reason}`);
  }
  const socket = one("--socket") ?? "";
  const verify = one("--verify") ?? "md5";
  if (verify !== "md5" && verify !== "size") problems.push(`--verify: must be md5 or size, got '${verify}'`);
  const healthPort = values.has("--health-port") ? number("--health-port", undefined, 0, 65535, true) : undefined;
  if (problems.length > 0) throw new OptionsError(problems);
  return {
    modelsDir,
    bucket,
    endpoint,
    region: one("--region") ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? "us-east-1",
    quotaBytes: Math.floor(cacheGb * 1e9),
    port,
    host,
    token,
    reserveBytes: Math.floor(reserveGb * 1e9),
    reservePercent,
    connections,
    rangeBytes: rangeMb * 1024 * 1024,
    pins,
    socket,
    healthPort,
    verify: verify as AgentSettings["verify"],
  };
}
