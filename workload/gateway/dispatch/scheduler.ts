import type { PromptMeta } from "../store/types";

/**
 * Fair share across clients: the client with the fewest prompts running goes first, ties broken by who
 * was served longest ago, then by the oldest waiting prompt; within a client ComfyUI's order holds
 * (lowest `number` first — `front` is negative — then acceptance order). So one client's 500-prompt batch
 * takes turns with an artist's single prompt instead of holding it back.
 */
export function pickNext(queued: PromptMeta[], runningPerClient: Map<string, number>, lastServed: Map<string, number>): PromptMeta | undefined {
  const heads = new Map<string, PromptMeta>();
  for (const r of queued) {
    const c = r.clientId ?? "";
    const h = heads.get(c);
    if (!h || r.number < h.number || (r.number === h.number && r.seq < h.seq)) heads.set(c, r);
  }
  let best: { c: string; r: PromptMeta } | undefined;
  for (const [c, r] of heads) {
    if (!best) {
      best = { c, r };
      continue;
    }
    const a = [runningPerClient.get(c) ?? 0, lastServed.get(c) ?? -1, r.seq];
    const b = [runningPerClient.get(best.c) ?? 0, lastServed.get(best.c) ?? -1, best.r.seq];
    if (a[0] < b[0] || (a[0] === b[0] && (a[1] < b[1] || (a[1] === b[1] && a[2] < b[2])))) best = { c, r };
  }
  return best?.r;
}
