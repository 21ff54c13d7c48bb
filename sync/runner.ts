/**
 * One round of SSM Run Command: send each part to its instances (at most 50 ids per SendCommand),
 * then poll every (command, instance) invocation until it ends or time runs out. Retrying is the
 * handler's job; this module only reports what happened to each delivery.
 */
import { GetCommandInvocationCommand, SendCommandCommand, SSMClient } from "@aws-sdk/client-ssm";

/** SendCommand accepts at most 50 InstanceIds. */
const SSM_MAX_INSTANCE_IDS = 50;

/** Parallel GetCommandInvocation calls; SSM throttles this API per account. */
const POLL_CONCURRENCY = 8;

/** A transient poll error this many times in a row ends the wait for that invocation. */
const MAX_POLL_ERRORS = 5;

/** Characters of a node's stderr kept in the summary: enough for the tool's last error lines. */
const STDERR_EXCERPT_CHARS = 500;

export interface Delivery {
  readonly instanceId: string;
  /** Index into the parts of the change list. */
  readonly part: number;
}

export interface DeliveryResult extends Delivery {
  /** `Success`, an SSM status or status detail, or one of ours: NotManaged, SendFailed, PollError, PollTimeout. */
  readonly status: string;
  readonly stderr?: string;
  readonly commandId?: string;
}

export interface RoundOptions {
  readonly ssm: SSMClient;
  readonly sleep: (ms: number) => Promise<void>;
  readonly now: () => number;
  readonly log: (line: object) => void;
  readonly pollIntervalMs: number;
  readonly commandTimeoutSeconds: number;
  /** Epoch ms after which polling stops; unfinished invocations are reported as PollTimeout. */
  readonly deadline: number;
  /** `commands` of each part. */
  readonly parts: readonly (readonly string[])[];
  readonly comment: (part: number) => string;
}

export function errorName(err: unknown): string {
  if (typeof err === "object" && err !== null && "name" in err && typeof err.name === "string") return err.name;
  return "Error";
}

function errorText(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return `${errorName(err)}: ${message}`.slice(0, STDERR_EXCERPT_CHARS);
}

/** The tail of stderr: the tool prints its summary of failures last. */
export function excerpt(text: string | undefined, max = STDERR_EXCERPT_CHARS): string | undefined {
  const trimmed = (text ?? "").trim();
  if (trimmed === "") return undefined;
  return trimmed.length <= max ? trimmed : `…${trimmed.slice(trimmed.length - max)}`;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

interface Invocation extends Delivery {
  readonly commandId: string;
}

type Poll =
  | { readonly done: true; readonly status: string; readonly stderr?: string }
  | { readonly done: false; readonly status: string; readonly error?: unknown };

/** Statuses after which an invocation never changes again (SSM UG, "Understanding command statuses"). */
function isTerminal(status: string | undefined, details: string | undefined): boolean {
  const terminalStatus = ["Success", "Failed", "Cancelled", "TimedOut"];
  const terminalDetails = ["Undeliverable", "Terminated", "InvalidPlatform", "AccessDenied"];
  return (status !== undefined && terminalStatus.includes(status)) || (details !== undefined && terminalDetails.includes(details));
}

async function sendChunk(options: RoundOptions, part: number, instanceIds: string[]): Promise<{ commandId?: string; error?: unknown }> {
  try {
    const out = await options.ssm.send(
      new SendCommandCommand({
        DocumentName: "AWS-RunShellScript",
        InstanceIds: instanceIds,
        TimeoutSeconds: options.commandTimeoutSeconds,
        Comment: options.comment(part),
        Parameters: {
          commands: [...options.parts[part]],
          executionTimeout: [String(options.commandTimeoutSeconds)],
        },
      }),
    );
    const commandId = out.Command?.CommandId;
    return commandId ? { commandId } : { error: new Error("SendCommand returned no CommandId") };
  } catch (error) {
    return { error };
  }
}

async function pollOnce(ssm: SSMClient, inv: Invocation): Promise<Poll> {
  try {
    const out = await ssm.send(new GetCommandInvocationCommand({ CommandId: inv.commandId, InstanceId: inv.instanceId }));
    const status = out.Status ?? "Unknown";
    if (!isTerminal(out.Status, out.StatusDetails)) return { done: false, status };
    // StatusDetails tells Undeliverable or Terminated apart from a plain Failed.
    const reported = status === "Success" ? status : (out.StatusDetails ?? status);
    return { done: true, status: reported, stderr: excerpt(out.StandardErrorContent) };
  } catch (error) {
    // Right after SendCommand the invocation may not be visible yet.
    if (errorName(error) === "InvocationDoesNotExist") return { done: false, status: "InvocationDoesNotExist" };
    return { done: false, status: "PollError", error };
  }
}

/** Send every delivery once and wait for the outcomes. */
export async function runRound(options: RoundOptions, deliveries: readonly Delivery[]): Promise<{ results: DeliveryResult[]; sends: number }> {
  const results: DeliveryResult[] = [];
  const pending: Invocation[] = [];
  let sends = 0;

  for (let part = 0; part < options.parts.length; part++) {
    const ids = deliveries.filter((d) => d.part === part).map((d) => d.instanceId);
    for (const ids50 of chunk(ids, SSM_MAX_INSTANCE_IDS)) {
      sends++;
      const sent = await sendChunk(options, part, ids50);
      if (sent.commandId) {
        for (const instanceId of ids50) pending.push({ instanceId, part, commandId: sent.commandId });
        continue;
      }
      // One unmanaged or just-terminated instance fails the whole call; isolate it.
      if (errorName(sent.error) === "InvalidInstanceId" && ids50.length > 1) {
        for (const instanceId of ids50) {
          sends++;
          const single = await sendChunk(options, part, [instanceId]);
          if (single.commandId) pending.push({ instanceId, part, commandId: single.commandId });
          else results.push({ instanceId, part, status: sendFailure(single.error), stderr: errorText(single.error) });
        }
        continue;
      }
      for (const instanceId of ids50) {
        results.push({ instanceId, part, status: sendFailure(sent.error), stderr: errorText(sent.error) });
      }
    }
  }

  const lastStatus = new Map<Invocation, string>();
  const pollErrors = new Map<Invocation, number>();
  let waiting = pending;
  while (waiting.length > 0 && options.now() + options.pollIntervalMs <= options.deadline) {
    await options.sleep(options.pollIntervalMs);
    const polls = await mapLimit(waiting, POLL_CONCURRENCY, (inv) => pollOnce(options.ssm, inv));
    const still: Invocation[] = [];
    polls.forEach((poll, i) => {
      const inv = waiting[i];
      if (poll.done) {
        results.push({ instanceId: inv.instanceId, part: inv.part, commandId: inv.commandId, status: poll.status, stderr: poll.stderr });
        return;
      }
      if (poll.error === undefined) {
        pollErrors.delete(inv);
        lastStatus.set(inv, poll.status);
        still.push(inv);
        return;
      }
      const count = (pollErrors.get(inv) ?? 0) + 1;
      pollErrors.set(inv, count);
      if (count < MAX_POLL_ERRORS) {
        still.push(inv);
        return;
      }
      options.log({ level: "warn", msg: "giving up polling an invocation", instanceId: inv.instanceId, commandId: inv.commandId, error: errorName(poll.error) });
      results.push({ instanceId: inv.instanceId, part: inv.part, commandId: inv.commandId, status: "PollError", stderr: errorText(poll.error) });
    });
    waiting = still;
  }
  for (const inv of waiting) {
    results.push({
      instanceId: inv.instanceId,
      part: inv.part,
      commandId: inv.commandId,
      status: "PollTimeout",
      stderr: `still ${lastStatus.get(inv) ?? "unpolled"} when polling reached its deadline`,
    });
  }
  return { results, sends };
}

function sendFailure(error: unknown): string {
  return errorName(error) === "InvalidInstanceId" ? "NotManaged" : "SendFailed";
}

// Exported as a list, not `export const`: TypeScript would compile in-module uses to `exports.X`,
// which Pulumi's closure serialization turns into the Lambda module's (empty) exports.
export { SSM_MAX_INSTANCE_IDS, STDERR_EXCERPT_CHARS };
