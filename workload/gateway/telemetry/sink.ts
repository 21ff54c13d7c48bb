import { CloudWatchLogsClient, CreateLogStreamCommand, PutLogEventsCommand, ResourceAlreadyExistsException } from "@aws-sdk/client-cloudwatch-logs";
import type { Logger } from "pino";
import { GATEWAY_STREAM_PREFIX, type EmfDocument } from "../../../contracts/metrics";

/** Where the gateway's EMF documents go. `put` never throws and never waits: metrics must not slow a prompt. */
export interface MetricsSink {
  put(doc: EmfDocument): void;
  /** Sends what is buffered (best effort). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** No metrics (local mode without a log group). */
export const NO_METRICS: MetricsSink = { put() {}, async flush() {}, async close() {} };

// PutLogEvents limits (CloudWatch Logs API reference, PutLogEvents): at most 10,000 events and
// 1,048,576 bytes per call, counted as UTF-8 message bytes + 26 per event, events in chronological
// order within 24 hours.
const MAX_EVENTS = 10_000;
const MAX_BYTES = 1_048_576;
const EVENT_OVERHEAD = 26;

export interface CloudWatchLogsSinkOptions {
  client: CloudWatchLogsClient;
  logGroup: string;
  /** The gateway's own stream, e.g. gateway/<pod name>; its IAM allows gateway/* only. */
  logStream: string;
  log: Logger;
  /** @defaultValue 10000 */
  flushMs?: number;
  /** Events kept while CloudWatch cannot be reached; the oldest go first. @defaultValue 5000 */
  maxBuffered?: number;
}

/**
 * EMF documents to one CloudWatch Logs stream with PutLogEvents, which extracts the metrics ("Using
 * the PutLogEvents API to send manually-created embedded metric format logs", CloudWatch User
 * Guide). Buffered and sent every `flushMs`; a failed call keeps the events for the next one, up
 * to `maxBuffered`; the stream is created on first use (an existing one is fine).
 */
export class CloudWatchLogsSink implements MetricsSink {
  private buffer: { timestamp: number; message: string }[] = [];
  private streamReady = false;
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private dropped = 0;
  private lastWarnAt = 0;

  constructor(private readonly o: CloudWatchLogsSinkOptions) {
    this.timer = setInterval(() => void this.flush(), o.flushMs ?? 10_000);
    this.timer.unref();
  }

  put(doc: EmfDocument): void {
    this.putLine(doc._aws.Timestamp, JSON.stringify(doc));
  }

  /** Any line (the audit trail uses the same sink). */
  putLine(timestamp: number, message: string): void {
    this.buffer.push({ timestamp, message });
    const max = this.o.maxBuffered ?? 5000;
    if (this.buffer.length > max) {
      this.dropped += this.buffer.length - max;
      this.buffer.splice(0, this.buffer.length - max);
    }
  }

  flush(): Promise<void> {
    this.sending ??= this.send().finally(() => (this.sending = undefined));
    return this.sending;
  }

  private async send(): Promise<void> {
    while (this.buffer.length > 0) {
      const batch = this.take();
      if (batch.length === 0) {
        // One event larger than a whole call could never be sent and would hold back every other.
        const [big] = this.buffer.splice(0, 1);
        this.warn(`metric line of ${Buffer.byteLength(big.message)} bytes dropped: larger than PutLogEvents accepts`);
        continue;
      }
      try {
        await this.ensureStream();
        await this.o.client.send(new PutLogEventsCommand({ logGroupName: this.o.logGroup, logStreamName: this.o.logStream, logEvents: batch }));
      } catch (err: unknown) {
        this.buffer.unshift(...batch);
        this.warn(`metrics not sent to CloudWatch Logs group ${this.o.logGroup} (${this.buffer.length} kept): ${(err as Error).name}: ${(err as Error).message}`);
        return;
      }
    }
    if (this.dropped > 0) {
      this.warn(`${this.dropped} metric line(s) dropped while CloudWatch Logs group ${this.o.logGroup} was unreachable`);
      this.dropped = 0;
    }
  }

  /** The oldest events that fit one call, in chronological order. */
  private take(): { timestamp: number; message: string }[] {
    this.buffer.sort((a, b) => a.timestamp - b.timestamp);
    let bytes = 0;
    let n = 0;
    while (n < this.buffer.length && n < MAX_EVENTS) {
      const size = Buffer.byteLength(this.buffer[n].message) + EVENT_OVERHEAD;
      if (bytes + size > MAX_BYTES) break;
      bytes += size;
      n++;
    }
    return this.buffer.splice(0, n);
  }

  private async ensureStream(): Promise<void> {
    if (this.streamReady) return;
    try {
      await this.o.client.send(new CreateLogStreamCommand({ logGroupName: this.o.logGroup, logStreamName: this.o.logStream }));
    } catch (err: unknown) {
      if (!(err instanceof ResourceAlreadyExistsException) && (err as Error).name !== "ResourceAlreadyExistsException") throw err;
    }
    this.streamReady = true;
  }

  private warn(msg: string): void {
    const now = Date.now();
    if (now - this.lastWarnAt < 60_000) return;
    this.lastWarnAt = now;
    this.o.log.warn(msg);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}

/**
 * The process's sink from its configuration (both modes): the metrics log group's stream
 * gateway/<pod name>, through a client it owns and destroys on close; none without a log group.
 */
export function metricsSinkFor(config: { metricsLogGroup?: string; region?: string; podName: string }, log: Logger): MetricsSink | undefined {
  if (!config.metricsLogGroup) return undefined;
  const client = new CloudWatchLogsClient(config.region ? { region: config.region } : {});
  const sink = new CloudWatchLogsSink({ client, logGroup: config.metricsLogGroup, logStream: `${GATEWAY_STREAM_PREFIX}${config.podName}`, log: log.child({ component: "metrics" }) });
  return {
    put: (doc) => sink.put(doc),
    flush: () => sink.flush(),
    async close() {
      await sink.close();
      client.destroy();
    },
  };
}
