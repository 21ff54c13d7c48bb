/**
 * The Lambda's input: an SQS batch whose bodies are S3 event notifications. Minimal local types
 * (no @types/aws-lambda); every body is parsed defensively because anyone allowed to send to the
 * queue can put anything in it.
 */
import { checkEventKey, keyForLog, KeyRejectReason } from "../contracts/modelKeys";

/** One SQS message as Lambda delivers it (Lambda DG, "Using Lambda with Amazon SQS"). */
export interface SQSRecord {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly body: string;
  readonly attributes?: Readonly<Record<string, string>>;
  readonly messageAttributes?: Readonly<Record<string, unknown>>;
  readonly md5OfBody?: string;
  readonly eventSource: string;
  readonly eventSourceARN?: string;
  readonly awsRegion?: string;
}

export interface SQSEvent {
  readonly Records: readonly SQSRecord[];
}

/** Partial-batch response: only the listed messages return to the queue. */
export interface SQSBatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

/** S3 event notification record, version 2.x (S3 UG, "Event message structure"). */
export interface S3EventRecord {
  readonly eventVersion: string;
  readonly eventSource: string;
  readonly awsRegion: string;
  readonly eventTime: string;
  readonly eventName: string;
  readonly s3: {
    readonly s3SchemaVersion?: string;
    readonly configurationId?: string;
    readonly bucket: { readonly name: string; readonly arn?: string };
    readonly object: {
      readonly key: string;
      readonly size?: number;
      readonly eTag?: string;
      readonly versionId?: string;
      readonly sequencer?: string;
    };
  };
}

export type Action = "put" | "delete";

/** One valid object event, key decoded and checked. */
export interface ObjectEvent {
  readonly messageId: string;
  readonly action: Action;
  readonly key: string;
  /** Upper-case hex, as S3 sends it; only comparable between events for the same key. */
  readonly sequencer: string;
  readonly eventName: string;
}

export type RejectReason =
  | KeyRejectReason
  | "unparseable-body"
  | "not-an-s3-event"
  | "malformed-record"
  | "missing-sequencer"
  | "wrong-bucket";

/** Refused and dropped: retrying could never make it valid. */
export interface Rejection {
  readonly messageId: string;
  readonly reason: RejectReason;
  readonly detail: string;
  readonly key?: string;
  readonly bucket?: string;
}

export interface Ignored {
  readonly messageId: string;
  readonly reason: "test-event" | "folder-marker" | "unhandled-event-type";
  readonly key?: string;
  readonly eventName?: string;
}

export interface ParsedBatch {
  readonly events: ObjectEvent[];
  readonly rejected: Rejection[];
  readonly ignored: Ignored[];
  /** Every bucket name seen in the batch, the configured one included when present. */
  readonly buckets: string[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * ObjectCreated:* and ObjectRemoved:* are what the bucket notification subscribes to. Lifecycle
 * expirations also make an object vanish, so they are honoured if someone subscribes them later.
 */
function actionFor(eventName: string): Action | undefined {
  if (eventName.startsWith("ObjectCreated:")) return "put";
  if (eventName.startsWith("ObjectRemoved:")) return "delete";
  if (eventName === "LifecycleExpiration:Delete" || eventName === "LifecycleExpiration:DeleteMarkerCreated") {
    return "delete";
  }
  return undefined;
}

/** Parse one S3 notification record; pushes exactly one event, rejection or ignore entry. */
function parseS3Record(messageId: string, record: unknown, modelsBucket: string, out: ParsedBatch): void {
  const s3 = isObject(record) && isObject(record.s3) ? record.s3 : undefined;
  const bucket = s3 && isObject(s3.bucket) ? s3.bucket.name : undefined;
  const object = s3 && isObject(s3.object) ? s3.object : undefined;
  const eventName = isObject(record) ? record.eventName : undefined;
  if (
    !isObject(record) ||
    typeof eventName !== "string" ||
    typeof bucket !== "string" ||
    !object ||
    typeof object.key !== "string"
  ) {
    out.rejected.push({ messageId, reason: "malformed-record", detail: "record lacks eventName, bucket or key" });
    return;
  }
  if (record.eventSource !== "aws:s3") {
    out.rejected.push({ messageId, reason: "not-an-s3-event", detail: `eventSource ${JSON.stringify(record.eventSource)}` });
    return;
  }
  if (!out.buckets.includes(bucket)) out.buckets.push(bucket);
  const rawKey = object.key;
  if (bucket !== modelsBucket) {
    out.rejected.push({
      messageId,
      reason: "wrong-bucket",
      detail: `event for bucket ${JSON.stringify(bucket)}, expected ${JSON.stringify(modelsBucket)}`,
      key: keyForLog(rawKey),
      bucket,
    });
    return;
  }
  const action = actionFor(eventName);
  if (action === undefined) {
    out.ignored.push({ messageId, reason: "unhandled-event-type", eventName, key: keyForLog(rawKey) });
    return;
  }
  const checked = checkEventKey(rawKey);
  if (checked.kind === "ignored") {
    out.ignored.push({ messageId, reason: checked.reason, eventName, key: keyForLog(checked.key) });
    return;
  }
  if (checked.kind === "rejected") {
    out.rejected.push({ messageId, reason: checked.reason, detail: checked.detail, key: keyForLog(checked.key) });
    return;
  }
  const sequencer = object.sequencer;
  if (typeof sequencer !== "string" || !/^[0-9A-Fa-f]+$/.test(sequencer)) {
    // Without a sequencer the event cannot be ordered against others for the same key.
    out.rejected.push({ messageId, reason: "missing-sequencer", detail: "no hex sequencer", key: keyForLog(checked.key) });
    return;
  }
  out.events.push({ messageId, action, key: checked.key, sequencer: sequencer.toUpperCase(), eventName });
}

/** Parse every message of an SQS batch into valid object events, rejections and ignored entries. */
export function parseBatch(event: SQSEvent, modelsBucket: string): ParsedBatch {
  const out: ParsedBatch = { events: [], rejected: [], ignored: [], buckets: [] };
  for (const message of event.Records ?? []) {
    const messageId = message.messageId;
    let body: unknown;
    try {
      body = JSON.parse(message.body);
    } catch {
      out.rejected.push({ messageId, reason: "unparseable-body", detail: "body is not JSON" });
      continue;
    }
    // S3 sends this once when the notification is configured; it names no object.
    if (isObject(body) && body.Event === "s3:TestEvent") {
      out.ignored.push({ messageId, reason: "test-event" });
      continue;
    }
    if (!isObject(body) || !Array.isArray(body.Records)) {
      out.rejected.push({ messageId, reason: "not-an-s3-event", detail: "body has no Records array" });
      continue;
    }
    for (const record of body.Records) parseS3Record(messageId, record, modelsBucket, out);
  }
  return out;
}
