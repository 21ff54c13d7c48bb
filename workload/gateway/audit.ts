/**
 * The audit trail: one JSON line per state change — who (user, and how they proved it), what (the route
 * and its target), from where (the connection and the forwarding chain), the answer's status — plus one
 * per finished prompt with its owner and GPU-seconds. To CloudWatch Logs (`GATEWAY_AUDIT_LOG_GROUP`,
 * stream `gateway/<pod>`, the group's retention) in Kubernetes; to a local file in local mode.
 */
import { CloudWatchLogsClient } from "@aws-sdk/client-cloudwatch-logs";
import { createWriteStream, mkdirSync } from "node:fs";
import * as path from "node:path";
import type { Logger } from "pino";
import { GATEWAY_STREAM_PREFIX } from "../../contracts/metrics";
import { CloudWatchLogsSink } from "./telemetry/sink";

export interface AuditEvent {
  user: string;
  /** session, key, local, or gateway (the gateway's own ending of a prompt). */
  via: string;
  /** e.g. "POST /prompt", "sign-in", "prompt finished". */
  action: string;
  target?: string;
  from?: string;
  status?: number;
  detail?: Record<string, unknown>;
}

export interface Audit {
  record(e: AuditEvent): void;
  close(): Promise<void>;
}

export const NO_AUDIT: Audit = { record() {}, async close() {} };

const line = (e: AuditEvent, now: number) => JSON.stringify({ time: new Date(now).toISOString(), ...e });

/** Local mode: appended to a file (one JSON object per line). */
export function fileAudit(file: string): Audit {
  mkdirSync(path.dirname(file), { recursive: true });
  const out = createWriteStream(file, { flags: "a" });
  return {
    record: (e) => void out.write(line(e, Date.now()) + "\n"),
    close: () => new Promise<void>((r) => out.end(() => r())),
  };
}

/** Kubernetes: the audit log group's stream gateway/<pod>, sent as the metrics are (buffered, retried). */
export function cloudWatchAudit(o: { logGroup: string; region?: string; podName: string }, log: Logger): Audit {
  const client = new CloudWatchLogsClient(o.region ? { region: o.region } : {});
  const sink = new CloudWatchLogsSink({ client, logGroup: o.logGroup, logStream: `${GATEWAY_STREAM_PREFIX}${o.podName}`, log: log.child({ component: "audit" }), flushMs: 2000, maxBuffered: 50_000 });
  return {
    record: (e) => {
      const now = Date.now();
      sink.putLine(now, line(e, now));
    },
    async close() {
      await sink.close();
      client.destroy();
    },
  };
}
