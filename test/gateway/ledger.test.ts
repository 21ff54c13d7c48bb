// The Ledger: the leader's one owner of prompt state, against the in-memory store with an injected clock.
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { Ledger } from "../../workload/gateway/dispatch/ledger";
import { MemoryStore, type PromptRecord } from "../../workload/gateway/store";
import { quiet, t2i } from "./helpers";

const rec = (over: Partial<PromptRecord> = {}): PromptRecord => ({
  id: randomUUID(), number: 0, seq: 1000, clientId: "c", owner: "u", prompt: t2i(1), extraData: {}, outputs: ["9"], state: "queued", attempt: 0, createdAt: 0, ...over,
});
const ok = { prompt: [], outputs: {}, status: { status_str: "success" as const, completed: true, messages: [] as [string, unknown][] }, meta: {} };

describe("Ledger (the leader's prompt state)", () => {
  let t = 1_000_000;
  const now = () => t;
  const make = (store = new MemoryStore(), epoch = 1, onFencedOut?: (id: string, e: number) => void) =>
    ({ store, ledger: new Ledger({ store, fence: { epoch }, log: quiet, historyTtlSeconds: 60, now, onFencedOut }) });

  it("each transition is one conditional, fenced write plus one mirror update", async () => {
    const { store, ledger } = make();
    const r = rec();
    await store.create(r);
    ledger.add(r);
    store.calls.clear();
    const c = await ledger.claim(r.id, "pod-a", "gw-1");
    assert.ok(c.ok);
    assert.deepEqual([...store.calls.entries()], [["claim", 1]], "one store call, and it brought the body back");
    assert.deepEqual(ledger.open.get(r.id), { ...ledger.open.get(r.id), state: "dispatched", attempt: 1, pod: "pod-a", podClient: "gw-1", fence: 1 });
    t += 5;
    assert.ok((await ledger.requeue(r.id, 1, "pod went away", true)).ok);
    assert.equal(ledger.open.get(r.id)!.state, "queued");
    assert.equal(ledger.open.get(r.id)!.pod, undefined);
    assert.ok((await ledger.claim(r.id, "pod-b", "gw-1")).ok);
    store.calls.clear();
    assert.ok((await ledger.complete(r.id, 2, ok)).ok);
    assert.deepEqual([...store.calls.entries()], [["complete", 1]]);
    assert.equal(ledger.open.has(r.id), false);
    assert.equal((await store.get(r.id))!.completedAt, t, "the injected clock");
  });

  it("a refused write follows one rule: re-read and take the store's word", async () => {
    const { store, ledger } = make();
    const [a, b, c] = [rec(), rec(), rec()];
    for (const r of [a, b, c]) {
      await store.create(r);
      ledger.add(r);
    }
    // Another writer moved a on (placed it on pod-x): the claim is refused and the mirror shows pod-x.
    assert.ok(await store.claim(a.id, 0, "pod-x", "gw-0", t, { epoch: 1 }));
    const ca = await ledger.claim(a.id, "pod-a", "gw-1");
    assert.equal(ca.ok, false);
    assert.equal(!ca.ok && ca.now?.pod, "pod-x");
    assert.equal(ledger.open.get(a.id)!.pod, "pod-x");
    // b finished elsewhere: a refused completion removes it from the mirror.
    assert.ok(await store.claim(b.id, 0, "pod-y", "gw-0", t, { epoch: 1 }));
    assert.ok(await store.complete(b.id, 1, ok, t, 60, { epoch: 1 }));
    const cb = await ledger.complete(b.id, 7, ok);
    assert.equal(cb.ok, false);
    assert.equal(ledger.open.has(b.id), false);
    // c was deleted by a client on another replica: gone from the mirror too.
    await store.deleteQueued([c.id]);
    assert.equal((await ledger.claim(c.id, "pod-a", "gw-1")).ok, false);
    assert.equal(ledger.open.has(c.id), false);
    // A store that throws is a refusal that keeps the mirror as it was.
    const d = rec();
    await store.create(d);
    ledger.add(d);
    const claim = store.claim;
    store.claim = async () => {
      throw new Error("throttled");
    };
    assert.equal((await ledger.claim(d.id, "pod-a", "gw-1")).ok, false);
    store.claim = claim;
    assert.equal(ledger.open.get(d.id)!.state, "queued");
  });

  it("take-over stamps every open prompt; a record a newer leader holds makes this one stand down", async () => {
    const store = new MemoryStore();
    const [a, b] = [rec(), rec()];
    for (const r of [a, b]) await store.create(r);
    assert.ok(await store.claim(a.id, 0, "pod-a", "gw-old", t, { epoch: 1 }));
    const fencedOut: number[] = [];
    const { ledger } = make(store, 2, (_id, e) => fencedOut.push(e));
    await ledger.load();
    assert.deepEqual([...ledger.open.values()].map((m) => m.fence), [2, 2]);
    assert.equal(await store.requeue(a.id, 1, "stale", true, { epoch: 1 }), false, "the old leader's write is refused once stamped");
    // A third leader takes over behind this one's back.
    await store.adopt(b.id, { epoch: 3 });
    assert.equal((await ledger.claim(b.id, "pod-b", "gw-2")).ok, false);
    assert.deepEqual(fencedOut, [3]);
  });

  it("a sweep's snapshot never brings back a prompt that ended while it was being read", async () => {
    const { store, ledger } = make();
    const r = rec({ seq: t });
    await store.create(r);
    ledger.add(r);
    const listOpen = store.listOpen.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    store.listOpen = async (o) => {
      const snapshot = await listOpen(o);
      await gate; // the prompt finishes while the listing is on its way back
      return snapshot;
    };
    const sweeping = ledger.sweep(0);
    assert.ok((await ledger.claim(r.id, "pod", "gw")).ok);
    assert.ok((await ledger.complete(r.id, 1, ok)).ok);
    release();
    assert.deepEqual(await sweeping, []);
    assert.equal(ledger.open.has(r.id), false, "not resurrected as dispatched");
    // A prompt another replica accepted is found.
    store.listOpen = listOpen;
    const other = rec({ seq: t });
    await store.create(other);
    assert.deepEqual((await ledger.sweep(0)).map((m) => m.id), [other.id]);
  });

  it("fail writes an error entry naming the reason; cancel removes a buffered prompt", async () => {
    const { store, ledger } = make();
    const [a, b] = [rec(), rec()];
    for (const r of [a, b]) {
      await store.create(r);
      ledger.add(r);
    }
    assert.ok((await ledger.fail(a.id, 0, "no ComfyUI pod became ready within 900 s")).ok);
    const e = (await store.get(a.id))!.history!;
    assert.equal(e.status.status_str, "error");
    assert.equal((e.status.messages[0][1] as { exception_message: string }).exception_message, "no ComfyUI pod became ready within 900 s");
    assert.deepEqual(e.prompt, [a.number, a.id, a.prompt, a.extraData, a.outputs]);
    assert.ok((await ledger.claim(b.id, "pod", "gw")).ok);
    assert.ok((await ledger.cancel(b.id, 1)).ok);
    assert.equal(await store.get(b.id), undefined);
    assert.equal(ledger.open.size, 0);
  });
});
