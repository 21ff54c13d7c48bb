import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { MemoryStore, startEmbeddedStore, type PromptRecord, type Store } from "../../workload/gateway/store";

const rec = (over: Partial<PromptRecord> = {}): PromptRecord => ({
  id: randomUUID(), number: 0, seq: 0, clientId: "c", prompt: { "1": { class_type: "X", inputs: {} } }, extraData: { client_id: "c" }, outputs: ["1"],
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

    it("numbers are monotonic", async () => {
      const a = await s.nextNumber();
      const b = await s.nextNumber();
      assert.equal(b, a + 1);
    });

    it("claim → complete once; a stale attempt can neither claim nor complete", async () => {
      const r = rec();
      await s.create(r);
      assert.equal(await s.claim(r.id, 0, "pod-a", 1), true);
      assert.equal(await s.claim(r.id, 0, "pod-b", 2), false, "second claim of the same attempt is refused");
      assert.equal((await s.counts()).running, 1);
      assert.equal(await s.requeue(r.id, 1, "pod died", true), true);
      assert.equal(await s.claim(r.id, 1, "pod-b", 3), true);
      assert.equal(await s.complete(r.id, 1, entry(r), 10, 60), false, "the first run's completion is stale");
      assert.equal(await s.complete(r.id, 2, entry(r), 10, 60), true);
      assert.equal(await s.complete(r.id, 2, entry(r), 11, 60), false, "completes exactly once");
      const got = (await s.get(r.id))!;
      assert.equal(got.state, "done");
      assert.equal(got.history!.status.status_str, "success");
      assert.deepEqual(got.history!.prompt, [r.number, r.id, r.prompt, r.extraData, r.outputs]);
      assert.deepEqual(await s.counts(), { waiting: 0, running: 0 });
      assert.deepEqual((await s.listOpen()).map((x) => x.id), []);
    });

    it("requeue without counting gives the attempt back", async () => {
      const r = rec();
      await s.create(r);
      await s.claim(r.id, 0, "p", 1);
      assert.equal(await s.requeue(r.id, 1, "taken back", false), true);
      const got = (await s.get(r.id))!;
      assert.equal(got.attempt, 0);
      assert.equal(got.state, "queued");
      assert.equal(got.pod, undefined);
    });

    it("deleteQueued only deletes queued prompts; history lists completions in order and hides on delete", async () => {
      const a = rec({ seq: 1 });
      const b = rec({ seq: 2 });
      const c = rec({ seq: 3 });
      for (const r of [a, b, c]) await s.create(r);
      await s.claim(b.id, 0, "p", 1);
      assert.deepEqual(await s.deleteQueued([a.id, b.id]), [a.id]);
      assert.equal(await s.get(a.id), undefined);
      await s.complete(c.id, 0, entry(c), 100, 60);
      await s.complete(b.id, 1, entry(b), 200, 60);
      assert.deepEqual((await s.listHistory()).map((r) => r.id), [c.id, b.id]);
      await s.hideHistory([c.id]);
      assert.deepEqual((await s.listHistory()).map((r) => r.id), [b.id]);
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
