import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceNotFoundException,
} from "@aws-sdk/client-dynamodb";
import { DeleteCommand, DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, UpdateCommand } from "@aws-sdk/lib-dynamodb";
import { gunzipSync, gzipSync } from "node:zlib";
import type { HistoryEntry, PromptRecord, PromptState, Store } from "./types";

/**
 * DynamoDB Store (AWS, and dynalite in local mode and tests). Layout is the README's contract: one item
 * per prompt (pk "P#<id>", sk "P"), sparse GSIs "open" (unfinished) and "history" (finished, visible).
 * Prompt bodies and history entries are gzipped JSON so typical workflows stay far below the 400 KB item limit.
 */
export const MAX_ITEM_BYTES = 380 * 1024;

export class PromptTooLarge extends Error {
  readonly code = "GW_ERR_PROMPT_TOO_LARGE";
  constructor(bytes: number) {
    super(`prompt is too large to store (${bytes} bytes compressed, limit ${MAX_ITEM_BYTES})`);
    this.name = "PromptTooLarge";
  }
}

const pad = (n: number) => String(Math.max(0, Math.floor(n))).padStart(16, "0");
const zip = (v: unknown) => gzipSync(Buffer.from(JSON.stringify(v)));
const unzip = (v: unknown) => JSON.parse(gunzipSync(Buffer.from(v as Uint8Array)).toString("utf8"));
const isConflict = (err: unknown) => err instanceof ConditionalCheckFailedException || (err as { name?: string })?.name === "ConditionalCheckFailedException";

export interface DynamoStoreOptions {
  table: string;
  client: DynamoDBClient;
  /** Per-call timeout; every call to the store has one. */
  timeoutMs?: number;
}

export class DynamoStore implements Store {
  private readonly doc: DynamoDBDocumentClient;
  private readonly table: string;
  private readonly timeoutMs: number;

  constructor(private readonly opts: DynamoStoreOptions) {
    this.doc = DynamoDBDocumentClient.from(opts.client, { marshallOptions: { removeUndefinedValues: true } });
    this.table = opts.table;
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  /** Local mode only (the role in AWS has no CreateTable): the table of the contract. */
  async ensureTable(): Promise<void> {
    try {
      await this.opts.client.send(new DescribeTableCommand({ TableName: this.table }));
      return;
    } catch (err: unknown) {
      if (!(err instanceof ResourceNotFoundException) && (err as { name?: string })?.name !== "ResourceNotFoundException") throw err;
    }
    await this.opts.client.send(
      new CreateTableCommand({
        TableName: this.table,
        BillingMode: "PAY_PER_REQUEST",
        AttributeDefinitions: ["pk", "sk", "open", "openKey", "hist", "histKey"].map((n) => ({ AttributeName: n, AttributeType: "S" })),
        KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }, { AttributeName: "sk", KeyType: "RANGE" }],
        GlobalSecondaryIndexes: [
          { IndexName: "open", KeySchema: [{ AttributeName: "open", KeyType: "HASH" }, { AttributeName: "openKey", KeyType: "RANGE" }], Projection: { ProjectionType: "ALL" } },
          { IndexName: "history", KeySchema: [{ AttributeName: "hist", KeyType: "HASH" }, { AttributeName: "histKey", KeyType: "RANGE" }], Projection: { ProjectionType: "ALL" } },
        ],
      }),
    );
    for (let i = 0; i < 100; i++) {
      const d = await this.opts.client.send(new DescribeTableCommand({ TableName: this.table }));
      if (d.Table?.TableStatus === "ACTIVE") return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`table ${this.table} did not become ACTIVE`);
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private send<T>(cmd: any): Promise<T> {
    return this.doc.send(cmd, { abortSignal: AbortSignal.timeout(this.timeoutMs) }) as Promise<T>;
  }

  private toItem(r: PromptRecord): Record<string, unknown> {
    const body = zip({ prompt: r.prompt, extraData: r.extraData, outputs: r.outputs });
    if (body.length > MAX_ITEM_BYTES) throw new PromptTooLarge(body.length);
    const item: Record<string, unknown> = {
      pk: `P#${r.id}`, sk: "P", id: r.id, number: r.number, seq: r.seq, clientId: r.clientId ?? undefined, body,
      state: r.state, attempt: r.attempt, pod: r.pod, createdAt: r.createdAt, dispatchedAt: r.dispatchedAt, lastError: r.lastError,
    };
    if (r.state !== "done") Object.assign(item, { open: "Q", openKey: pad(r.seq) });
    return item;
  }

  private fromItem(i: Record<string, unknown>): PromptRecord {
    const body = unzip(i.body);
    const r: PromptRecord = {
      id: i.id as string, number: i.number as number, seq: i.seq as number, clientId: (i.clientId as string) ?? null,
      prompt: body.prompt, extraData: body.extraData, outputs: body.outputs, state: i.state as PromptState, attempt: i.attempt as number,
      createdAt: i.createdAt as number,
    };
    if (i.pod !== undefined) r.pod = i.pod as string;
    if (i.dispatchedAt !== undefined) r.dispatchedAt = i.dispatchedAt as number;
    if (i.completedAt !== undefined) r.completedAt = i.completedAt as number;
    if (i.lastError !== undefined) r.lastError = i.lastError as string;
    if (i.hidden) r.hidden = true;
    if (i.hdata !== undefined) {
      const h = unzip(i.hdata) as Omit<HistoryEntry, "prompt">;
      r.history = { prompt: [r.number, r.id, r.prompt, r.extraData, r.outputs], ...h };
    }
    return r;
  }

  async create(rec: PromptRecord) {
    try {
      await this.send(new PutCommand({ TableName: this.table, Item: this.toItem(rec), ConditionExpression: "attribute_not_exists(pk)" }));
      return { created: true, record: rec };
    } catch (err: unknown) {
      if (!isConflict(err)) throw err;
      const existing = await this.get(rec.id);
      if (!existing) throw new Error(`prompt ${rec.id} exists but cannot be read`, { cause: err });
      return { created: false, record: existing };
    }
  }

  async nextNumber() {
    const out = await this.send<{ Attributes?: { n: number } }>(
      new UpdateCommand({ TableName: this.table, Key: { pk: "META", sk: "counter" }, UpdateExpression: "ADD n :one", ExpressionAttributeValues: { ":one": 1 }, ReturnValues: "UPDATED_NEW" }),
    );
    return (out.Attributes?.n ?? 1) - 1;
  }

  async get(id: string) {
    const out = await this.send<{ Item?: Record<string, unknown> }>(new GetCommand({ TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, ConsistentRead: true }));
    return out.Item ? this.fromItem(out.Item) : undefined;
  }

  private async queryAll(index: "open" | "history", key: string, value: string, projection?: string): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.send<{ Items?: Record<string, unknown>[]; LastEvaluatedKey?: Record<string, unknown> }>(
        new QueryCommand({
          TableName: this.table, IndexName: index, KeyConditionExpression: "#k = :v", ExpressionAttributeNames: { "#k": key, ...(projection?.includes("#s") ? { "#s": "state" } : {}), ...(projection?.includes("#i") ? { "#i": "id" } : {}) },
          ExpressionAttributeValues: { ":v": value }, ExclusiveStartKey: start, ...(projection ? { ProjectionExpression: projection } : {}),
        }),
      );
      items.push(...(out.Items ?? []));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }

  async listOpen() {
    return (await this.queryAll("open", "open", "Q")).map((i) => this.fromItem(i)).filter((r) => r.state !== "done");
  }

  private async update(id: string, update: string, condition: string, values: Record<string, unknown>, names: Record<string, string> = {}): Promise<boolean> {
    try {
      await this.send(new UpdateCommand({
        TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, UpdateExpression: update,
        ConditionExpression: `attribute_exists(pk) AND ${condition}`, ExpressionAttributeValues: values, ExpressionAttributeNames: { "#s": "state", ...names },
      }));
      return true;
    } catch (err: unknown) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  claim(id: string, expectedAttempt: number, pod: string, now: number) {
    return this.update(id, "SET #s = :d, attempt = :next, pod = :pod, dispatchedAt = :now", "#s = :q AND attempt = :a",
      { ":d": "dispatched", ":q": "queued", ":a": expectedAttempt, ":next": expectedAttempt + 1, ":pod": pod, ":now": now });
  }

  requeue(id: string, attempt: number, reason: string, countAttempt: boolean) {
    return this.update(id, "SET #s = :q, attempt = :next, lastError = :r REMOVE pod", "#s = :d AND attempt = :a",
      { ":d": "dispatched", ":q": "queued", ":a": attempt, ":next": countAttempt ? attempt : attempt - 1, ":r": reason });
  }

  complete(id: string, attempt: number, history: HistoryEntry, now: number, ttlSeconds: number) {
    // The prompt array is rebuilt from the record on read: not stored twice.
    const rest: Partial<HistoryEntry> = { ...history };
    delete rest.prompt;
    return this.update(id, "SET #s = :done, hdata = :h, completedAt = :now, hist = :H, histKey = :hk, expiresAt = :exp REMOVE #o, openKey, pod",
      "#s <> :done AND attempt = :a",
      { ":done": "done", ":a": attempt, ":h": zip(rest), ":now": now, ":H": "H", ":hk": `${pad(now)}#${id}`, ":exp": Math.floor(now / 1000) + ttlSeconds },
      { "#o": "open" });
  }

  async deleteQueued(ids?: string[]) {
    const targets = ids ?? (await this.listOpen()).filter((r) => r.state === "queued").map((r) => r.id);
    const out: string[] = [];
    for (const id of targets) {
      try {
        await this.send(new DeleteCommand({ TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, ConditionExpression: "#s = :q", ExpressionAttributeNames: { "#s": "state" }, ExpressionAttributeValues: { ":q": "queued" } }));
        out.push(id);
      } catch (err: unknown) {
        if (!isConflict(err)) throw err;
      }
    }
    return out;
  }

  async listHistory() {
    return (await this.queryAll("history", "hist", "H")).map((i) => this.fromItem(i));
  }

  async hideHistory(ids?: string[]) {
    const targets = ids ?? (await this.queryAll("history", "hist", "H", "#i, #s")).map((i) => i.id as string);
    for (const id of targets) {
      // HIDDEN is a DynamoDB reserved word.
      await this.update(id, "SET #h = :t REMOVE hist, histKey", "#s = :done", { ":t": true, ":done": "done" }, { "#h": "hidden" });
    }
  }

  async counts() {
    const items = await this.queryAll("open", "open", "Q", "#s");
    let waiting = 0;
    let running = 0;
    for (const i of items) {
      if (i.state === "queued") waiting++;
      else if (i.state === "dispatched") running++;
    }
    return { waiting, running };
  }

  async getMeta(key: string) {
    const out = await this.send<{ Item?: { v: number } }>(new GetCommand({ TableName: this.table, Key: { pk: "META", sk: key }, ConsistentRead: true }));
    return out.Item?.v;
  }

  async setMetaMax(key: string, value: number) {
    try {
      await this.send(new PutCommand({ TableName: this.table, Item: { pk: "META", sk: key, v: value }, ConditionExpression: "attribute_not_exists(v) OR v < :v", ExpressionAttributeValues: { ":v": value } }));
    } catch (err: unknown) {
      if (!isConflict(err)) throw err;
    }
  }

  async close() {
    this.doc.destroy();
  }
}
