import { ConditionalCheckFailedException } from "@aws-sdk/client-dynamodb";
import { DeleteCommand, GetCommand, PutCommand, QueryCommand, UpdateCommand, type DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";
import type { ApiKeyRecord, AuthStore, LoginState, SessionRecord, TicketRecord } from "./types";

const clone = <T>(v: T): T => structuredClone(v);
const ttl = (endsAtMs: number) => Math.ceil(endsAtMs / 1000);
/** An item without the table's own attributes (keys and the TTL). */
function fields<T>(item: Record<string, unknown>): T {
  const out: Record<string, unknown> = { ...item };
  for (const k of ["pk", "sk", "expiresAt"]) delete out[k];
  return out as T;
}
const isConflict = (err: unknown) => err instanceof ConditionalCheckFailedException || (err as { name?: string })?.name === "ConditionalCheckFailedException";

/** In-process AuthStore (tests, and local mode through the embedded DynamoDB store it shares the code of). */
export class MemoryAuthStore implements AuthStore {
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly users = new Map<string, number>();
  private readonly keys = new Map<string, ApiKeyRecord>();
  private readonly tickets = new Map<string, TicketRecord>();
  private readonly logins = new Map<string, LoginState>();

  async putSession(s: SessionRecord) {
    this.sessions.set(s.id, clone(s));
  }
  async getSession(id: string) {
    const s = this.sessions.get(id);
    return s ? clone(s) : undefined;
  }
  async updateSession(id: string, patch: Partial<SessionRecord>) {
    const s = this.sessions.get(id);
    if (!s) return false;
    Object.assign(s, clone(patch));
    return true;
  }
  async deleteSession(id: string) {
    this.sessions.delete(id);
  }
  async revokeUser(userId: string, at: number) {
    this.users.set(userId, Math.max(at, this.users.get(userId) ?? 0));
  }
  async userRevokedBefore(userId: string) {
    return this.users.get(userId);
  }
  async putKey(k: ApiKeyRecord) {
    this.keys.set(k.id, clone(k));
  }
  async getKey(id: string) {
    const k = this.keys.get(id);
    return k ? clone(k) : undefined;
  }
  async listKeys() {
    return [...this.keys.values()].map(clone);
  }
  async revokeKey(id: string, at: number) {
    const k = this.keys.get(id);
    if (!k) return false;
    k.revokedAt ??= at;
    return true;
  }
  async putTicket(t: TicketRecord) {
    this.tickets.set(t.id, clone(t));
  }
  async takeTicket(id: string) {
    const t = this.tickets.get(id);
    this.tickets.delete(id);
    return t ? clone(t) : undefined;
  }
  async putLoginState(l: LoginState) {
    this.logins.set(l.state, clone(l));
  }
  async takeLoginState(state: string) {
    const l = this.logins.get(state);
    this.logins.delete(state);
    return l ? clone(l) : undefined;
  }
}

/**
 * The same in the gateway's DynamoDB table (README "DynamoDB"): `S#<session id>`, `U#<user>` (revoked
 * before), `KEYS`/`<key id>` (one partition, so the keys CLI can list them), `T#<ticket id>`, `L#<state>`;
 * short-lived items carry the table's TTL attribute `expiresAt`.
 */
export class DynamoAuthStore implements AuthStore {
  constructor(private readonly doc: DynamoDBDocumentClient, private readonly table: string, private readonly timeoutMs = 5000) {}

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private send<T>(cmd: any): Promise<T> {
    return this.doc.send(cmd, { abortSignal: AbortSignal.timeout(this.timeoutMs) }) as Promise<T>;
  }
  private async get<T>(pk: string, sk: string): Promise<T | undefined> {
    const out = await this.send<{ Item?: Record<string, unknown> }>(new GetCommand({ TableName: this.table, Key: { pk, sk }, ConsistentRead: true }));
    return out.Item ? fields<T>(out.Item) : undefined;
  }
  private async take<T>(pk: string, sk: string): Promise<T | undefined> {
    const out = await this.send<{ Attributes?: Record<string, unknown> }>(new DeleteCommand({ TableName: this.table, Key: { pk, sk }, ReturnValues: "ALL_OLD" }));
    return out.Attributes ? fields<T>(out.Attributes) : undefined;
  }

  async putSession(s: SessionRecord) {
    await this.send(new PutCommand({ TableName: this.table, Item: { pk: `S#${s.id}`, sk: "S", ...s, expiresAt: ttl(s.endsAt) } }));
  }
  getSession(id: string) {
    return this.get<SessionRecord>(`S#${id}`, "S");
  }
  async updateSession(id: string, patch: Partial<SessionRecord>) {
    const entries = Object.entries(patch).filter(([, v]) => v !== undefined);
    if (!entries.length) return true;
    try {
      await this.send(new UpdateCommand({
        TableName: this.table, Key: { pk: `S#${id}`, sk: "S" }, ConditionExpression: "attribute_exists(pk)",
        UpdateExpression: `SET ${entries.map((_, i) => `#k${i} = :v${i}`).join(", ")}`,
        ExpressionAttributeNames: Object.fromEntries(entries.map(([k], i) => [`#k${i}`, k])),
        ExpressionAttributeValues: Object.fromEntries(entries.map(([, v], i) => [`:v${i}`, v])),
      }));
      return true;
    } catch (err: unknown) {
      if (isConflict(err)) return false;
      throw err;
    }
  }
  async deleteSession(id: string) {
    await this.send(new DeleteCommand({ TableName: this.table, Key: { pk: `S#${id}`, sk: "S" } }));
  }
  async revokeUser(userId: string, at: number) {
    try {
      await this.send(new UpdateCommand({
        TableName: this.table, Key: { pk: `U#${userId}`, sk: "U" }, UpdateExpression: "SET revokedBefore = :at",
        ConditionExpression: "attribute_not_exists(revokedBefore) OR revokedBefore < :at", ExpressionAttributeValues: { ":at": at },
      }));
    } catch (err: unknown) {
      if (!isConflict(err)) throw err;
    }
  }
  async userRevokedBefore(userId: string) {
    return (await this.get<{ revokedBefore?: number }>(`U#${userId}`, "U"))?.revokedBefore;
  }
  async putKey(k: ApiKeyRecord) {
    // The table's TTL removes a key's record 30 days after it stopped being valid.
    await this.send(new PutCommand({ TableName: this.table, Item: { pk: "KEYS", sk: k.id, ...k, expiresAt: ttl(k.validUntil + 30 * 86400_000) }, ConditionExpression: "attribute_not_exists(pk)" }));
  }
  getKey(id: string) {
    return this.get<ApiKeyRecord>("KEYS", id);
  }
  async listKeys() {
    const out: ApiKeyRecord[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.send<{ Items?: Record<string, unknown>[]; LastEvaluatedKey?: Record<string, unknown> }>(
        new QueryCommand({ TableName: this.table, KeyConditionExpression: "pk = :k", ExpressionAttributeValues: { ":k": "KEYS" }, ExclusiveStartKey: start }),
      );
      for (const item of page.Items ?? []) out.push(fields<ApiKeyRecord>(item));
      start = page.LastEvaluatedKey;
    } while (start);
    return out;
  }
  async revokeKey(id: string, at: number) {
    try {
      await this.send(new UpdateCommand({
        TableName: this.table, Key: { pk: "KEYS", sk: id }, UpdateExpression: "SET revokedAt = if_not_exists(revokedAt, :at)",
        ConditionExpression: "attribute_exists(pk)", ExpressionAttributeValues: { ":at": at },
      }));
      return true;
    } catch (err: unknown) {
      if (isConflict(err)) return false;
      throw err;
    }
  }
  async putTicket(t: TicketRecord) {
    await this.send(new PutCommand({ TableName: this.table, Item: { pk: `T#${t.id}`, sk: "T", ...t, expiresAt: ttl(t.endsAt) } }));
  }
  takeTicket(id: string) {
    return this.take<TicketRecord>(`T#${id}`, "T");
  }
  async putLoginState(l: LoginState) {
    await this.send(new PutCommand({ TableName: this.table, Item: { pk: `L#${l.state}`, sk: "L", ...l, expiresAt: ttl(l.endsAt) } }));
  }
  takeLoginState(state: string) {
    return this.take<LoginState>(`L#${state}`, "L");
  }
}
