/** Shared pieces of the sync tests: fixtures, a fake clock, and decoding of the sent command. */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import type { SQSEvent, SQSRecord } from "../../sync/events";
import { NODE_MODELS_DIR } from "../../contracts/node";
import { nodeApplyCommand } from "../../contracts/modelsAgent";

export const BUCKET = "comfyui-models-123456789012";
export const CLUSTER = "comfyui-dev";
export const NODE_POOLS = ["gpu"];

export function loadEvent(name: string): SQSEvent {
  return JSON.parse(readFileSync(path.join(__dirname, "fixtures", name), "utf8")) as SQSEvent;
}

export function loadTemplate(): SQSRecord {
  return JSON.parse(readFileSync(path.join(__dirname, "fixtures", "sqs-record-template.json"), "utf8")) as SQSRecord;
}

interface TemplateEvent {
  eventName: string;
  key: string;
  sequencer: string;
  bucket?: string;
}

/** A message built from the saved template, with its S3 record changed as asked. */
export function messageFromTemplate(messageId: string, events: TemplateEvent[]): SQSRecord {
  const template = loadTemplate();
  const body = JSON.parse(template.body) as { Records: Record<string, unknown>[] };
  const base = body.Records[0];
  const records = events.map((e) => {
    const record = structuredClone(base) as { eventName: string; s3: { bucket: { name: string; arn: string }; object: Record<string, unknown> } };
    record.eventName = e.eventName;
    record.s3.object.key = e.key;
    record.s3.object.sequencer = e.sequencer;
    if (e.eventName.startsWith("ObjectRemoved:")) {
      delete record.s3.object.size;
      delete record.s3.object.eTag;
    }
    if (e.bucket) record.s3.bucket = { name: e.bucket, arn: `arn:aws:s3:::${e.bucket}` };
    return record;
  });
  return { ...template, messageId, receiptHandle: `${template.receiptHandle}-${messageId}`, body: JSON.stringify({ Records: records }) };
}

/** Sleep and clock that move together, so deadline logic is exercised without waiting. */
export function fakeTime(): { now: () => number; sleep: (ms: number) => Promise<void>; sleeps: number[] } {
  let t = 1_800_000_000_000;
  const sleeps: number[] = [];
  return {
    now: () => t,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
    },
    sleeps,
  };
}

/** The change lines a node would read, from an `AWS-RunShellScript` `commands` list. */
export function decodeCommands(commands: readonly string[]): string {
  assertEqualLength(commands.length, 1);
  const match = /^printf '%s' '([A-Za-z0-9+/=]+)' \| base64 -d \| /.exec(commands[0]);
  // The whole command is the agent's apply over its socket (test/sync/nodeCommand.test.ts runs it).
  if (!match || commands[0] !== nodeApplyCommand(NODE_MODELS_DIR, match[1])) throw new Error(`unexpected command shape: ${commands[0].slice(0, 160)}`);
  return Buffer.from(match[1], "base64").toString("utf8");
}

function assertEqualLength(actual: number, expected: number): void {
  if (actual !== expected) throw new Error(`expected ${expected} command(s), got ${actual}`);
}

export function instanceIds(count: number, prefix = "i-0"): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}${i.toString(16).padStart(16, "0")}`);
}

/** A DescribeInstances page holding the given instances. */
export function page(ids: string[], nextToken?: string) {
  return {
    Reservations: [{ ReservationId: "r-0123456789abcdef0", Instances: ids.map((InstanceId) => ({ InstanceId, State: { Code: 16, Name: "running" as const } })) }],
    ...(nextToken ? { NextToken: nextToken } : {}),
  };
}
