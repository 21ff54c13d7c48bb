import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceNotFoundException,
} from "@aws-sdk/client-dynamodb";
import { BatchGetCommand, DeleteCommand, DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, UpdateCommand } from "@aws-sdk/lib-dynamodb";
import { gunzipSync, gzipSync } from "node:zlib";
import { DynamoAuthStore } from "../auth/stores";
import type { Fence, HistoryEntry, HistoryQuery, PromptBody, PromptMeta, PromptRecord, PromptState, Store } from "./types";

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
/** Every attribute but the body: what the dispatcher's mirror holds. */
const META_ATTRIBUTES = ["id", "number", "seq", "clientId", "owner", "state", "attempt", "pod", "podClient", "createdAt", "dispatchedAt", "lastError", "fence"];
/** The fence rule of every leader write: no record is written by an epoch older than the last one that wrote it. */
const FENCE_OK = "(attribute_not_exists(fence) OR fence <= :e)";
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
        AttributeDefinitions: ["pk", "sk", "open", "openKey", "hist", "histKey", "uhist"].map((n) => ({ AttributeName: n, AttributeType: "S" })),
        KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }, { AttributeName: "sk", KeyType: "RANGE" }],
        GlobalSecondaryIndexes: [
          { IndexName: "open", KeySchema: [{ AttributeName: "open", KeyType: "HASH" }, { AttributeName: "openKey", KeyType: "RANGE" }], Projection: { ProjectionType: "ALL" } },
          { IndexName: "history", KeySchema: [{ AttributeName: "hist", KeyType: "HASH" }, { AttributeName: "histKey", KeyType: "RANGE" }], Projection: { ProjectionType: "ALL" } },
          { IndexName: "userHistory", KeySchema: [{ AttributeName: "uhist", KeyType: "HASH" }, { AttributeName: "histKey", KeyType: "RANGE" }], Projection: { ProjectionType: "ALL" } },
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
      pk: `P#${r.id}`, sk: "P", id: r.id, number: r.number, seq: r.seq, clientId: r.clientId ?? undefined, owner: r.owner, body,
      state: r.state, attempt: r.attempt, pod: r.pod, podClient: r.podClient, createdAt: r.createdAt, dispatchedAt: r.dispatchedAt, lastError: r.lastError, fence: r.fence,
    };
    if (r.state !== "done") Object.assign(item, { open: "Q", openKey: pad(r.seq) });
    return item;
  }

  private metaFromItem(i: Record<string, unknown>): PromptMeta {
    const m: PromptMeta = {
      id: i.id as string, number: i.number as number, seq: i.seq as number, clientId: (i.clientId as string) ?? null,
      // Prompts from before per-user scope belong to ComfyUI's single user.
      owner: (i.owner as string) ?? "default",
      state: i.state as PromptState, attempt: i.attempt as number, createdAt: i.createdAt as number,
    };
    for (const k of ["pod", "podClient", "dispatchedAt", "lastError", "fence"] as const) if (i[k] !== undefined) (m as unknown as Record<string, unknown>)[k] = i[k];
    return m;
  }

  private fromItem(i: Record<string, unknown>): PromptRecord {
    const body = unzip(i.body) as PromptBody;
    const r: PromptRecord = { ...this.metaFromItem(i), prompt: body.prompt, extraData: body.extraData, outputs: body.outputs };
    if (i.completedAt !== undefined) r.completedAt = i.completedAt as number;
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
      // A client's retry with the same prompt_id: the read happens only on this path.
      const existing = await this.get(rec.id);
      if (!existing) throw new Error(`prompt ${rec.id} exists but cannot be read`, { cause: err });
      return { created: false, record: existing };
    }
  }

  async get(id: string) {
    const out = await this.send<{ Item?: Record<string, unknown> }>(new GetCommand({ TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, ConsistentRead: true }));
    return out.Item ? this.fromItem(out.Item) : undefined;
  }

  async getBodies(ids: readonly string[]) {
    const out = new Map<string, PromptBody>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += 100) {
      let keys: Record<string, unknown>[] | undefined = unique.slice(i, i + 100).map((id) => ({ pk: `P#${id}`, sk: "P" }));
      for (let round = 0; keys && keys.length && round < 5; round++) {
        const res: { Responses?: Record<string, Record<string, unknown>[]>; UnprocessedKeys?: Record<string, { Keys?: Record<string, unknown>[] }> } = await this.send(
          new BatchGetCommand({ RequestItems: { [this.table]: { Keys: keys, ProjectionExpression: "#i, body", ExpressionAttributeNames: { "#i": "id" } } } }),
        );
        for (const item of res.Responses?.[this.table] ?? []) out.set(item.id as string, unzip(item.body) as PromptBody);
        keys = res.UnprocessedKeys?.[this.table]?.Keys;
        if (keys?.length) await new Promise((r) => setTimeout(r, 50 * 2 ** round));
      }
    }
    return out;
  }

  /** Every page of a query on one of the sparse indexes. */
  private async *query(index: "open" | "history" | "userHistory", key: string, value: string, o: { projection?: string[]; from?: string; descending?: boolean; pageSize?: number } = {}): AsyncIterable<Record<string, unknown>[]> {
    const names: Record<string, string> = { "#k": key };
    const values: Record<string, unknown> = { ":v": value };
    let cond = "#k = :v";
    if (o.from !== undefined) {
      names["#r"] = index === "open" ? "openKey" : "histKey";
      values[":r"] = o.from;
      cond += " AND #r >= :r";
    }
    const projection = o.projection?.map((p, n) => {
      names[`#p${n}`] = p;
      return `#p${n}`;
    });
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.send<{ Items?: Record<string, unknown>[]; LastEvaluatedKey?: Record<string, unknown> }>(
        new QueryCommand({
          TableName: this.table, IndexName: index, KeyConditionExpression: cond, ExpressionAttributeNames: names, ExpressionAttributeValues: values,
          ExclusiveStartKey: start, ScanIndexForward: !o.descending, ...(o.pageSize ? { Limit: o.pageSize } : {}), ...(projection ? { ProjectionExpression: projection.join(", ") } : {}),
        }),
      );
      yield out.Items ?? [];
      start = out.LastEvaluatedKey;
    } while (start);
  }

  async listOpen(opts: { sinceSeq?: number } = {}) {
    const out: PromptMeta[] = [];
    for await (const page of this.query("open", "open", "Q", { projection: META_ATTRIBUTES, from: opts.sinceSeq !== undefined ? pad(opts.sinceSeq) : undefined })) {
      for (const i of page) if (i.state !== "done") out.push(this.metaFromItem(i));
    }
    return out;
  }

  private async update(id: string, update: string, condition: string, values: Record<string, unknown>, names: Record<string, string> = {}, returnNew = false): Promise<Record<string, unknown> | undefined> {
    try {
      const out = await this.send<{ Attributes?: Record<string, unknown> }>(new UpdateCommand({
        TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, UpdateExpression: update,
        ConditionExpression: `attribute_exists(pk) AND ${condition}`, ExpressionAttributeValues: values, ExpressionAttributeNames: { "#s": "state", ...names },
        ...(returnNew ? { ReturnValues: "ALL_NEW" } : {}),
      }));
      return out.Attributes ?? {};
    } catch (err: unknown) {
      if (isConflict(err)) return undefined;
      throw err;
    }
  }

  async claim(id: string, expectedAttempt: number, pod: string, podClient: string, now: number, fence: Fence) {
    // ALL_NEW brings the body back with the claim: the dispatcher needs no second read.
    const item = await this.update(id, "SET #s = :d, attempt = :next, pod = :pod, podClient = :pc, dispatchedAt = :now, fence = :e", `#s = :q AND attempt = :a AND ${FENCE_OK}`,
      { ":d": "dispatched", ":q": "queued", ":a": expectedAttempt, ":next": expectedAttempt + 1, ":pod": pod, ":pc": podClient, ":now": now, ":e": fence.epoch }, {}, true);
    return item ? this.fromItem(item) : undefined;
  }

  async requeue(id: string, attempt: number, reason: string, countAttempt: boolean, fence: Fence) {
    return (await this.update(id, "SET #s = :q, attempt = :next, lastError = :r, fence = :e REMOVE pod, podClient", `#s = :d AND attempt = :a AND ${FENCE_OK}`,
      { ":d": "dispatched", ":q": "queued", ":a": attempt, ":next": countAttempt ? attempt : attempt - 1, ":r": reason, ":e": fence.epoch })) !== undefined;
  }

  async complete(id: string, attempt: number, history: HistoryEntry, now: number, ttlSeconds: number, fence: Fence) {
    // The prompt array is rebuilt from the record on read: not stored twice.
    const rest: Partial<HistoryEntry> = { ...history };
    delete rest.prompt;
    // uhist (the per-user history index's key) is copied from the record's owner in the same write.
    return (await this.update(id, "SET #s = :done, hdata = :h, completedAt = :now, hist = :H, uhist = if_not_exists(#ow, :dflt), histKey = :hk, expiresAt = :exp, fence = :e REMOVE #o, openKey, pod, podClient",
      `#s <> :done AND attempt = :a AND ${FENCE_OK}`,
      { ":done": "done", ":a": attempt, ":h": zip(rest), ":now": now, ":H": "H", ":dflt": "default", ":hk": `${pad(now)}#${id}`, ":exp": Math.floor(now / 1000) + ttlSeconds, ":e": fence.epoch },
      { "#o": "open", "#ow": "owner" })) !== undefined;
  }

  async cancel(id: string, attempt: number, fence: Fence) {
    try {
      await this.send(new DeleteCommand({
        TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, ConditionExpression: `#s = :d AND attempt = :a AND ${FENCE_OK}`,
        ExpressionAttributeNames: { "#s": "state" }, ExpressionAttributeValues: { ":d": "dispatched", ":a": attempt, ":e": fence.epoch },
      }));
      return true;
    } catch (err: unknown) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  async adopt(id: string, fence: Fence) {
    const item = await this.update(id, "SET fence = :e", `#s <> :done AND ${FENCE_OK}`, { ":done": "done", ":e": fence.epoch }, {}, true);
    return item ? this.metaFromItem(item) : undefined;
  }

  async deleteQueued(ids?: readonly string[], owner?: string) {
    const targets = ids ?? (await this.listOpen()).filter((r) => r.state === "queued" && (owner === undefined || r.owner === owner)).map((r) => r.id);
    const out: string[] = [];
    for (const id of targets) {
      try {
        await this.send(new DeleteCommand({
          TableName: this.table, Key: { pk: `P#${id}`, sk: "P" }, ConditionExpression: owner === undefined ? "#s = :q" : "#s = :q AND #ow = :ow",
          ExpressionAttributeNames: { "#s": "state", ...(owner === undefined ? {} : { "#ow": "owner" }) }, ExpressionAttributeValues: { ":q": "queued", ...(owner === undefined ? {} : { ":ow": owner }) },
        }));
        out.push(id);
      } catch (err: unknown) {
        if (!isConflict(err)) throw err;
      }
    }
    return out;
  }

  async listHistory(q: HistoryQuery = {}) {
    const [index, key, value] = q.owner === undefined ? (["history", "hist", "H"] as const) : (["userHistory", "uhist", q.owner] as const);
    const max = q.maxItems;
    const offset = q.offset ?? -1;
    if (max !== undefined && max <= 0) return [];
    if (max !== undefined && offset < 0) {
      // "The newest max_items": read that many from the newest end, answer them oldest first.
      const out: PromptRecord[] = [];
      for await (const page of this.query(index, key, value, { descending: true, pageSize: Math.min(max, 1000) })) {
        for (const i of page) if (out.length < max) out.push(this.fromItem(i));
        if (out.length >= max) break;
      }
      return out.reverse();
    }
    const skip = Math.max(0, offset);
    const out: PromptRecord[] = [];
    let seen = 0;
    for await (const page of this.query(index, key, value, { pageSize: max !== undefined ? Math.min(skip + max, 1000) : 1000 })) {
      for (const i of page) {
        if (seen++ < skip) continue;
        if (max === undefined || out.length < max) out.push(this.fromItem(i));
      }
      if (max !== undefined && out.length >= max) break;
    }
    return out;
  }

  async *historyPages(pageSize = 100, owner?: string) {
    const [index, key, value] = owner === undefined ? (["history", "hist", "H"] as const) : (["userHistory", "uhist", owner] as const);
    for await (const page of this.query(index, key, value, { pageSize })) if (page.length) yield page.map((i) => this.fromItem(i));
  }

  async hideHistory(ids?: readonly string[], owner?: string) {
    let targets = ids ? [...ids] : [];
    if (!ids) {
      const [index, key, value] = owner === undefined ? (["history", "hist", "H"] as const) : (["userHistory", "uhist", owner] as const);
      for await (const page of this.query(index, key, value, { projection: ["id"] })) targets.push(...page.map((i) => i.id as string));
    }
    targets = [...new Set(targets)];
    for (const id of targets) {
      // HIDDEN is a DynamoDB reserved word; another user's entry is left alone (the condition on the owner).
      await this.update(id, "SET #h = :t REMOVE hist, uhist, histKey", owner === undefined ? "#s = :done" : "#s = :done AND #ow = :ow",
        { ":t": true, ":done": "done", ...(owner === undefined ? {} : { ":ow": owner }) }, { "#h": "hidden", ...(owner === undefined ? {} : { "#ow": "owner" }) });
    }
  }

  async counts() {
    let waiting = 0;
    let running = 0;
    for await (const page of this.query("open", "open", "Q", { projection: ["state"] })) {
      for (const i of page) {
        if (i.state === "queued") waiting++;
        else if (i.state === "dispatched") running++;
      }
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

  async takeEpoch() {
    const out = await this.send<{ Attributes?: { v: number } }>(
      new UpdateCommand({ TableName: this.table, Key: { pk: "META", sk: "epoch" }, UpdateExpression: "ADD v :one", ExpressionAttributeValues: { ":one": 1 }, ReturnValues: "UPDATED_NEW" }),
    );
    return out.Attributes?.v ?? 1;
  }

  /** Sessions, API keys, tickets and login states in the same table. */
  authStore(): DynamoAuthStore {
    return new DynamoAuthStore(this.doc, this.table, this.timeoutMs);
  }

  async close() {
    this.doc.destroy();
  }
}
