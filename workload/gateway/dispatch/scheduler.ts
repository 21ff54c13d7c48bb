import type { PromptMeta } from "../store/types";

/** Running prompts and when each was last served, per user (owner) and per client of a user. */
export interface Shares {
  running: Map<string, number>;
  lastServed: Map<string, number>;
}

/** The fair-share key of a client within its owner. */
export const clientKey = (r: Pick<PromptMeta, "owner" | "clientId">) => `${r.owner}\n${r.clientId ?? ""}`;

/** Of `heads` (one candidate per key), the key with the fewest running, then served longest ago, then the oldest prompt. */
function fairest(heads: Map<string, PromptMeta>, s: Shares): PromptMeta | undefined {
  let best: { k: string; r: PromptMeta } | undefined;
  for (const [k, r] of heads) {
    if (!best) {
      best = { k, r };
      continue;
    }
    const a = [s.running.get(k) ?? 0, s.lastServed.get(k) ?? -1, r.seq];
    const b = [s.running.get(best.k) ?? 0, s.lastServed.get(best.k) ?? -1, best.r.seq];
    if (a[0] < b[0] || (a[0] === b[0] && (a[1] < b[1] || (a[1] === b[1] && a[2] < b[2])))) best = { k, r };
  }
  return best?.r;
}

/**
 * Fair share, first across users, then across each user's clients: the user with the fewest prompts
 * running goes first, ties broken by who was served longest ago, then by the oldest waiting prompt; within
 * that user, the same rule picks the client; within a client ComfyUI's order holds (lowest `number` first
 * — `front` is negative — then acceptance order). So one artist's 500-prompt batch takes turns with another
 * artist's single prompt, and a pipeline's many clients count as one user.
 */
export function pickNext(queued: PromptMeta[], users: Shares, clients: Shares): PromptMeta | undefined {
  const byUser = new Map<string, Map<string, PromptMeta>>();
  for (const r of queued) {
    let heads = byUser.get(r.owner);
    if (!heads) byUser.set(r.owner, (heads = new Map()));
    const k = clientKey(r);
    const h = heads.get(k);
    if (!h || r.number < h.number || (r.number === h.number && r.seq < h.seq)) heads.set(k, r);
  }
  const userHeads = new Map<string, PromptMeta>();
  for (const [owner, heads] of byUser) userHeads.set(owner, fairest(heads, clients)!);
  return fairest(userHeads, users);
}

/**
 * The queued prompts in the order pickNext would place them if each went at once (each pick counts as
 * running and served now for the next), lazily: a caller that needs the first few stops early.
 * `users` and `clients` are read, not changed.
 */
export function* fairOrder(queued: readonly PromptMeta[], users: Shares, clients: Shares): Generator<PromptMeta> {
  const left = [...queued];
  const u: Shares = { running: new Map(users.running), lastServed: new Map(users.lastServed) };
  const c: Shares = { running: new Map(clients.running), lastServed: new Map(clients.lastServed) };
  let clock = Math.max(0, ...u.lastServed.values(), ...c.lastServed.values());
  while (left.length > 0) {
    const next = pickNext(left, u, c);
    if (!next) return;
    yield next;
    left.splice(left.indexOf(next), 1);
    clock++;
    u.running.set(next.owner, (u.running.get(next.owner) ?? 0) + 1);
    u.lastServed.set(next.owner, clock);
    c.running.set(clientKey(next), (c.running.get(clientKey(next)) ?? 0) + 1);
    c.lastServed.set(clientKey(next), clock);
  }
}
