import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { get, startGateway, t2i, until } from "./helpers";
import { startStandIn } from "./standin";

describe("gateway: a refused write makes the leader take the store's word", function () {
  this.timeout(30000);

  it("a prompt the store moved on behind the leader's back (another attempt, a gone pod) still runs, not stuck as 'dispatched'", async () => {
    const pod = await startStandIn({ stepMs: 1 });
    const gw = await startGateway([pod.url], ["--orphan-seconds", "0.2"]);
    try {
      await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
      const store = gw.gateway.services.store;
      await gw.gateway.standDown();
      const id = randomUUID();
      await store.create({
        id, number: 1, seq: 1, clientId: null, owner: "default", prompt: t2i(7), extraData: {}, outputs: ["9"], state: "queued", attempt: 0, createdAt: Date.now(),
      });
      const fence = { epoch: await store.takeEpoch() };
      assert.ok(await store.claim(id, 0, "pod-gone", "gw", Date.now(), fence));
      await gw.gateway.lead(fence); // the mirror: dispatched, attempt 1, on a pod that is not among the pods
      // Meanwhile the store moves on (as another writer of the same epoch would): attempt 2, again on a gone pod.
      assert.ok(await store.requeue(id, 1, "test", true, fence));
      assert.ok(await store.claim(id, 1, "pod-gone", "gw", Date.now(), fence));
      // The orphan check's requeue at attempt 1 is refused; without a re-read the prompt never leaves.
      const entry = await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 15000);
      assert.equal(entry.status.status_str, "success");
      assert.equal((await store.get(id))!.attempt, 3, "attempt 2 counted as lost, attempt 3 ran");
    } finally {
      await gw.close();
      await pod.close();
    }
  });
});
