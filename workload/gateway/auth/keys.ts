import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { SCOPES, type ApiKeyRecord, type AuthStore, type Scope } from "./types";

/** `cgw_<id>.<secret>`: the id finds the record, the secret (32 random bytes) is checked against its hash. */
const KEY_RE = /^cgw_([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/;

export const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

export function parseKey(token: string): { id: string; secret: string } | undefined {
  const m = KEY_RE.exec(token);
  return m ? { id: m[1], secret: m[2] } : undefined;
}

/** A new key: the full token (shown once) and the record to store (its hash only). */
export function mintKey(o: { owner: string; name: string; scopes: Scope[]; days: number; admin?: boolean; now?: number }): { token: string; record: ApiKeyRecord } {
  const now = o.now ?? Date.now();
  const id = randomBytes(12).toString("base64url");
  const secret = randomBytes(32).toString("base64url");
  for (const s of o.scopes) if (!SCOPES.includes(s)) throw new Error(`unknown scope ${JSON.stringify(s)} (scopes: ${SCOPES.join(", ")})`);
  if (!o.owner || !/^[\w.@:+-]{1,128}$/.test(o.owner)) throw new Error(`owner ${JSON.stringify(o.owner)}: 1-128 of letters, digits and . @ : + - _`);
  if (!(o.days > 0 && o.days <= 3650)) throw new Error(`expiry ${o.days} days: must be in 1…3650`);
  return {
    token: `cgw_${id}.${secret}`,
    record: { id, hash: sha256(secret), owner: o.owner, name: o.name, scopes: [...new Set(o.scopes)], createdAt: now, validUntil: now + o.days * 86400_000, admin: o.admin === true },
  };
}

/** The key's record when the token is one of ours, unexpired and not revoked. */
export async function checkKey(store: AuthStore, token: string, now = Date.now()): Promise<ApiKeyRecord | undefined> {
  const p = parseKey(token);
  if (!p) return undefined;
  const k = await store.getKey(p.id);
  if (!k || k.revokedAt !== undefined || k.validUntil <= now) return undefined;
  const a = Buffer.from(k.hash, "hex");
  const b = Buffer.from(sha256(p.secret), "hex");
  return a.length === b.length && timingSafeEqual(a, b) ? k : undefined;
}
