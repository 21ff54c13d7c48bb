import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { MemoryStore, startEmbeddedStore, type PromptRecord, type Store } from "../../workload/gateway/store";

const rec = (over: Partial<PromptRecord> = {}): PromptRecord => ({
  id: randomUUID(), number: 0, seq: 0, clientId: "c", owner: "u", prompt: { "1": { class_type: "X", inputs: {} } }, extraData: { client_id: "c" }, outputs: ["1"],
  state: "queued", attempt: 0, createdAt: Date.now(), ...over,
});
const entry = (r: PromptRecord) => ({ prompt: [r.number, r.id, r.prompt, r.extraData, r.outputs], outputs: { "1": { images: [] } }, status: { status_str: "success" as const, completed: true, messages: [] as [string, unknown][] }, meta: {} });

/** One suite, every Store adapter: the semantics the dispatcher's exactly-once rests on. */
function conformance(name: string, make: () => Promise<{ store: Store; close(): Promise<void> }>) {
  describe(`Store conformance: ${name}`, function () {
    this.timeout(20000);
    let h: { store: Store; close(): Promise<void> };
    let s: Store;
    beforeEach(async () => {
      h = await make();
      s = h.store;
    });
    afterEach(async () => h.close());

    it("create is idempotent on the id and never overwrites", async () => {
      const r = rec();
      assert.equal((await s.create(r)).created, true);
      const again = await s.create({ ...r, number: 99 });
      assert.equal(again.created, false);
      assert.equal(again.record.number, 0);
      assert.deepEqual((await s.get(r.id))!.prompt, r.prompt);
    });

    const F1 = { epoch: 1 };
    const F2 = { epoch: 2 };

    it("claim → complete once; a stale attempt can neither claim nor complete; the claim brings the body back", async () => {
      const r = rec();
      await s.create(r);
      const claimed = await s.claim(r.id, 0, "pod-a", "gw-a", 1, F1);
      assert.ok(claimed, "claimed");
      assert.deepEqual(claimed.prompt, r.prompt, "the claim's answer carries the body: no second read before dispatch");
      assert.equal(claimed.podClient, "gw-a");
      assert.equal(await s.claim(r.id, 0, "pod-b", "gw-a", 2, F1), undefined, "second claim of the same attempt is refused");
      assert.equal((await s.counts()).running, 1);
      assert.equal(await s.requeue(r.id, 1, "pod died", true, F1), true);
      assert.ok(await s.claim(r.id, 1, "pod-b", "gw-a", 3, F1));
      assert.equal(await s.complete(r.id, 1, entry(r), 10, 60, F1), false, "the first run's completion is stale");
      assert.equal(await s.complete(r.id, 2, entry(r), 10, 60, F1), true);
      assert.equal(await s.complete(r.id, 2, entry(r), 11, 60, F1), false, "completes exactly once");
      const got = (await s.get(r.id))!;
      assert.equal(got.state, "done");
      assert.equal(got.history!.status.status_str, "success");
      assert.deepEqual(got.history!.prompt, [r.number, r.id, r.prompt, r.extraData, r.outputs]);
      assert.deepEqual(await s.counts(), { waiting: 0, running: 0 });
      assert.deepEqual((await s.listOpen()).map((x) => x.id), []);
    });

    it("fencing: once a newer leader wrote or adopted a prompt, every write of an older epoch is refused", async () => {
      const a = rec();
      const b = rec();
      const c = rec();
      for (const r of [a, b, c]) await s.create(r);
      assert.ok(await s.claim(a.id, 0, "pod", "gw-1", 1, F1));
      assert.ok(await s.claim(b.id, 0, "pod", "gw-1", 1, F1));
      // The new leader takes over: it stamps what it found open.
      assert.equal((await s.adopt(a.id, F2))!.fence, 2);
      assert.equal(await s.requeue(a.id, 1, "stale leader thinks the pod died", true, F1), false, "stale requeue refused");
      assert.equal(await s.complete(a.id, 1, entry(a), 5, 60, F1), false, "stale completion refused");
      assert.equal(await s.cancel(a.id, 1, F1), false, "stale cancel refused");
      assert.ok(await s.claim(c.id, 0, "pod", "gw-2", 2, F2));
      assert.equal(await s.requeue(c.id, 1, "x", true, F1), false, "a record the new leader claimed refuses the old epoch");
      assert.equal(await s.complete(a.id, 1, entry(a), 6, 60, F2), true, "the new leader's own write passes");
      assert.equal(await s.adopt(a.id, F2), undefined, "a finished prompt is not adopted");
      assert.equal(await s.adopt(c.id, F1), undefined, "an older epoch cannot stamp back");
      assert.equal((await s.get(c.id))!.fence, 2);
      assert.ok(await s.requeue(b.id, 1, "untouched by the new leader", true, F1), "a record no newer leader touched still takes the old epoch");
      const e1 = await s.takeEpoch();
      assert.ok(e1 < (await s.takeEpoch()), "epochs only grow");
    });

    it("cancel deletes a dispatched prompt of that attempt only; requeue without counting gives the attempt back", async () => {
      const r = rec();
      await s.create(r);
      await s.claim(r.id, 0, "p", "gw", 1, F1);
      assert.equal(await s.cancel(r.id, 2, F1), false);
      assert.equal(await s.requeue(r.id, 1, "taken back", false, F1), true);
      const got = (await s.get(r.id))!;
      assert.equal(got.attempt, 0);
      assert.equal(got.state, "queued");
      assert.equal(got.pod, undefined);
      assert.equal(await s.cancel(r.id, 0, F1), false, "not dispatched");
      await s.claim(r.id, 0, "p", "gw", 1, F1);
      assert.equal(await s.cancel(r.id, 1, F1), true);
      assert.equal(await s.get(r.id), undefined);
    });

    it("listOpen holds no bodies and can start at an acceptance time; getBodies reads several", async () => {
      const a = rec({ seq: 1000 });
      const b = rec({ seq: 2000 });
      for (const r of [a, b]) await s.create(r);
      const open = await s.listOpen();
      assert.deepEqual(open.map((m) => m.id), [a.id, b.id]);
      assert.ok(open.every((m) => !("prompt" in m) && !("extraData" in m)), "metadata only");
      assert.deepEqual((await s.listOpen({ sinceSeq: 1500 })).map((m) => m.id), [b.id]);
      const bodies = await s.getBodies([a.id, b.id, "missing"]);
      assert.deepEqual([...bodies.keys()].sort(), [a.id, b.id].sort());
      assert.deepEqual(bodies.get(a.id)!.prompt, a.prompt);
    });

    it("deleteQueued only deletes queued prompts; history lists completions in order, pages like ComfyUI, hides on delete", async () => {
      const a = rec({ seq: 1 });
      const b = rec({ seq: 2 });
      const c = rec({ seq: 3 });
      for (const r of [a, b, c]) await s.create(r);
      await s.claim(b.id, 0, "p", "gw", 1, F1);
      assert.deepEqual(await s.deleteQueued([a.id, b.id]), [a.id]);
      assert.equal(await s.get(a.id), undefined);
      await s.complete(c.id, 0, entry(c), 100, 60, F1);
      await s.complete(b.id, 1, entry(b), 200, 60, F1);
      const d = rec({ seq: 4 });
      await s.create(d);
      await s.complete(d.id, 0, entry(d), 300, 60, F1);
      assert.deepEqual((await s.listHistory()).map((r) => r.id), [c.id, b.id, d.id]);
      assert.deepEqual((await s.listHistory({ maxItems: 2 })).map((r) => r.id), [b.id, d.id], "the newest two, oldest first");
      assert.deepEqual((await s.listHistory({ maxItems: 1, offset: 1 })).map((r) => r.id), [b.id], "offset counts from the oldest");
      assert.deepEqual((await s.listHistory({ offset: 2 })).map((r) => r.id), [d.id]);
      const pages: string[][] = [];
      for await (const p of s.historyPages(2)) pages.push(p.map((r) => r.id));
      assert.deepEqual(pages.flat(), [c.id, b.id, d.id]);
      assert.ok(pages.every((p) => p.length <= 2));
      await s.hideHistory([c.id]);
      assert.deepEqual((await s.listHistory()).map((r) => r.id), [b.id, d.id]);
      assert.equal((await s.get(c.id))!.hidden, true, "kept so a retried id is not run again");
      await s.hideHistory();
      assert.deepEqual(await s.listHistory(), []);
    });

    it("meta keeps the maximum", async () => {
      assert.equal(await s.getMeta("podReadyAt"), undefined);
      await s.setMetaMax("podReadyAt", 5);
      await s.setMetaMax("podReadyAt", 3);
      assert.equal(await s.getMeta("podReadyAt"), 5);
    });
  });
}

conformance("memory", async () => {
  const store = new MemoryStore();
  return { store, close: () => store.close() };
});
conformance("DynamoDB on dynalite", async () => {
  const e = await startEmbeddedStore({});
  return { store: e.store, close: () => e.close() };
});
