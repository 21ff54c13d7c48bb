/**
 * The model-sync Lambda: S3 events (through SQS) → net change per key → every running GPU node of
 * the cluster's NodePools applies it through SSM Run Command, with the result of each node checked.
 *
 * Written for Pulumi's closure serialization: `createHandler` captures only its (plain) config and
 * optional clients; SDK clients are created lazily inside the invocation, never at module scope.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { SSMClient } from "@aws-sdk/client-ssm";
import { Change, netChanges } from "./changes";
import { buildCommands, splitChanges } from "./command";
import { configFromEnv, resolveConfig, ResolvedSyncConfig, SyncConfig } from "./config";
import { parseBatch, SQSBatchResponse, SQSEvent } from "./events";
import { keyForLog } from "../contracts/modelKeys";
import { findNodeInstanceIds } from "./nodes";
import { Delivery, DeliveryResult, errorName, runRound } from "./runner";
import { syncBatchEmf } from "../contracts/metrics";

export type { SyncConfig } from "./config";
export { configFromEnv } from "./config";
export type { SQSBatchResponse, SQSEvent, SQSRecord } from "./events";

export interface SyncClients {
  readonly ssm?: SSMClient;
  readonly ec2?: EC2Client;
  /** One JSON object per log line. @defaultValue `console.log(JSON.stringify(line))` */
  readonly log?: (line: object) => void;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Clock for deadlines; tests drive it together with `sleep`. @defaultValue `Date.now` */
  readonly now?: () => number;
}

/** The part of the Lambda context the handler uses. */
export interface LambdaContextLike {
  getRemainingTimeInMillis(): number;
}

export type SyncHandler = (event: SQSEvent, context?: LambdaContextLike) => Promise<SQSBatchResponse>;

/** Time kept back from the Lambda timeout to log the summary and answer SQS. */
const SAFETY_MARGIN_MS = 15_000;

/** Cap on list lengths in a log line: CloudWatch truncates events above 256 KB. */
const MAX_LOGGED_ITEMS = 200;

export interface FailedNode {
  readonly instanceId: string;
  readonly status: string;
  readonly stderr?: string;
}

export interface SyncSummary {
  level: "info" | "error";
  msg: "model sync summary";
  messages: number;
  changeCount: number;
  changes: Change[];
  superseded: number;
  ignored: number;
  rejectedCount: number;
  rejected: object[];
  parts: number;
  nodes: string[];
  succeeded: string[];
  failed: FailedNode[];
  /** Nodes that stopped running during the sync: nothing to update any more. */
  gone: { instanceId: string; status: string }[];
  attempts: number;
  sendCommandCalls: number;
  retriedMessages: number;
  error?: string;
}

interface Deps {
  readonly ssm: SSMClient;
  readonly ec2: EC2Client;
  readonly log: (line: object) => void;
  readonly sleep: (ms: number) => Promise<void>;
  readonly now: () => number;
}

export function createHandler(config: SyncConfig, clients?: SyncClients): SyncHandler {
  const cfg = resolveConfig(config);
  // Filled on first use inside Lambda; an object (not a `let`) so serialized closures can mutate it.
  const lazy: { ssm?: SSMClient; ec2?: EC2Client } = {};
  return async (event, context) => {
    const deps: Deps = {
      ssm: clients?.ssm ?? (lazy.ssm ??= new SSMClient({ region: cfg.region })),
      ec2: clients?.ec2 ?? (lazy.ec2 ??= new EC2Client({ region: cfg.region })),
      log: clients?.log ?? ((line: object) => console.log(JSON.stringify(line))),
      sleep: clients?.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))),
      now: clients?.now ?? (() => Date.now()),
    };
    return syncBatch(cfg, deps, event, context);
  };
}

/**
 * Handler that reads its configuration from the Lambda environment on first invocation, for
 * `aws.lambda.CallbackFunction({ callback: createEnvHandler() })`.
 */
export function createEnvHandler(clients?: SyncClients): SyncHandler {
  const cache: { handler?: SyncHandler } = {};
  return async (event, context) => {
    cache.handler ??= createHandler(configFromEnv(process.env), clients);
    return cache.handler(event, context);
  };
}

async function syncBatch(
  cfg: ResolvedSyncConfig,
  deps: Deps,
  event: SQSEvent,
  context: LambdaContextLike | undefined,
): Promise<SQSBatchResponse> {
  const deadline = context ? deps.now() + context.getRemainingTimeInMillis() - SAFETY_MARGIN_MS : Infinity;
  const parsed = parseBatch(event, cfg.modelsBucket);
  const net = netChanges(parsed.events);
  const summary: SyncSummary = {
    level: "info",
    msg: "model sync summary",
    messages: event.Records?.length ?? 0,
    changeCount: net.changes.length,
    changes: net.changes.slice(0, MAX_LOGGED_ITEMS).map((c) => ({ action: c.action, key: keyForLog(c.key) })),
    superseded: net.superseded,
    ignored: parsed.ignored.length,
    rejectedCount: parsed.rejected.length,
    rejected: parsed.rejected.slice(0, MAX_LOGGED_ITEMS),
    parts: 0,
    nodes: [],
    succeeded: [],
    failed: [],
    gone: [],
    attempts: 0,
    sendCommandCalls: 0,
    retriedMessages: 0,
  };
  const finish = (retry: boolean): SQSBatchResponse => {
    // Every message with a valid change goes back, so SQS redelivers it and the DLQ keeps it at last.
    const batchItemFailures = retry ? net.messageIds.map((itemIdentifier) => ({ itemIdentifier })) : [];
    summary.retriedMessages = batchItemFailures.length;
    if (retry) summary.level = "error";
    deps.log(summary);
    // The batch's figures as an EMF line (contracts/metrics.ts), next to the summary it sums up.
    deps.log(
      syncBatchEmf(
        { clusterName: cfg.clusterName, changeCount: summary.changeCount, rejectedCount: summary.rejectedCount, failedNodes: summary.failed.length, retried: retry },
        deps.now(),
      ),
    );
    return { batchItemFailures };
  };

  if (parsed.rejected.length > 0) {
    // Invalid input stays invalid: logged for a human, never retried.
    deps.log({ level: "error", msg: "rejected S3 events; dropped, not retried", rejected: summary.rejected });
  }
  if (net.changes.length === 0) return finish(false);

  const findNodes = () => findNodeInstanceIds(deps.ec2, cfg.clusterName, cfg.nodePools);
  try {
    summary.nodes = await findNodes();
  } catch (err) {
    summary.error = `DescribeInstances failed: ${errorName(err)}`;
    return finish(true);
  }
  if (summary.nodes.length === 0) {
    deps.log({ level: "info", msg: "no running GPU nodes; new nodes read the bucket at boot" });
    return finish(false);
  }

  const parts = splitChanges(net.changes).map(buildCommands);
  summary.parts = parts.length;
  const final = new Map<string, DeliveryResult>();
  const gone = new Set<string>();
  let targets: Delivery[] = summary.nodes.flatMap((instanceId) => parts.map((_, part) => ({ instanceId, part })));

  try {
    for (;;) {
      summary.attempts++;
      const attempt = summary.attempts;
      const round = await runRound(
        {
          ssm: deps.ssm,
          sleep: deps.sleep,
          now: deps.now,
          log: deps.log,
          pollIntervalMs: cfg.pollIntervalMs,
          commandTimeoutSeconds: cfg.commandTimeoutSeconds,
          // Delivery and execution timeouts can each run in full; past both, SSM has given up too.
          deadline: Math.min(deadline, deps.now() + (2 * cfg.commandTimeoutSeconds + 30) * 1000),
          parts,
          comment: (part) => commandComment(net.changes.length, part, parts.length, attempt, cfg.maxAttempts),
        },
        targets,
      );
      summary.sendCommandCalls += round.sends;
      for (const r of round.results) final.set(`${r.instanceId}/${r.part}`, r);
      const failed = round.results.filter((r) => r.status !== "Success");
      if (failed.length === 0) break;

      // A node Karpenter removed meanwhile needs nothing; one still running gets the failed part again.
      let running: string[] | undefined;
      try {
        running = await findNodes();
      } catch (err) {
        deps.log({ level: "warn", msg: "DescribeInstances failed before retry; retrying all failed nodes", error: errorName(err) });
      }
      targets = [];
      for (const r of failed) {
        if (running !== undefined && !running.includes(r.instanceId)) gone.add(r.instanceId);
        else targets.push({ instanceId: r.instanceId, part: r.part });
      }
      if (targets.length === 0 || attempt >= cfg.maxAttempts) break;
      if (deps.now() + 2 * cfg.pollIntervalMs > deadline) {
        deps.log({ level: "warn", msg: "no time left for another attempt", attempt });
        break;
      }
      await deps.sleep(cfg.pollIntervalMs);
    }
  } catch (err) {
    // A bug or an SDK surprise must not lose changes: report and let SQS redeliver.
    summary.error = `sync failed: ${errorName(err)}`;
    return finish(true);
  }

  for (const instanceId of summary.nodes) {
    const results = parts.map((_, part): DeliveryResult => final.get(`${instanceId}/${part}`) ?? { instanceId, part, status: "NotSent" });
    const bad = results.find((r) => r.status !== "Success");
    if (bad === undefined) summary.succeeded.push(instanceId);
    else if (gone.has(instanceId)) summary.gone.push({ instanceId, status: bad.status });
    else summary.failed.push({ instanceId, status: bad.status, ...(bad.stderr ? { stderr: bad.stderr } : {}) });
  }
  return finish(summary.failed.length > 0);
}

/** SendCommand's Comment is limited to 100 characters. */
export function commandComment(changes: number, part: number, parts: number, attempt: number, maxAttempts: number): string {
  const partText = parts > 1 ? ` part ${part + 1}/${parts}` : "";
  return `comfyui model sync: ${changes} change(s)${partText}, attempt ${attempt}/${maxAttempts}`.slice(0, 100);
}
