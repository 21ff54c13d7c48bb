/**
 * The cold-start prefetch's decisions (workload/gateway/models/prefetch.ts), without Kubernetes or agents:
 * which agent is asked for which waiting prompt's files, when the hold is renewed, and when it is released.
 * test/gateway/modelRouting.test.ts runs the same through the dispatcher against real agents.
 */
import assert from "node:assert/strict";
import type { ModelNeeds } from "../../workload/gateway/models/inputs";
import { PREFETCH_HOLD_SECONDS, PREFETCH_RETRY_MS, Prefetcher, type AgentInfo, type PrefetchAction, type PrefetchPod, type PrefetchState } from "../../workload/gateway/models/prefetch";
import { fairOrder } from "../../workload/gateway/dispatch/scheduler";
import type { PromptMeta } from "../../workload/gateway/store/types";

const needs = (main: string | undefined, ...others: string[]): ModelNeeds => ({
  files: [...(main ? [main] : []), ...others].map((key) => ({ key, bytes: 1000, modified: 0 })),
  main,
  nodeOf: {},
});

const ALPHA = "checkpoints/alpha.safetensors";
const BETA = "checkpoints/beta.safetensors";
const GAMMA = "checkpoints/gamma.safetensors";
const LORA = "loras/style.safetensors";

/** A small world: queued prompts (in order), where dispatched ones run, pods, agents, and which needs a Ready node holds. */
function world() {
  const w = {
    agents: [] as AgentInfo[],
    pods: [] as PrefetchPod[],
    queue: [] as string[],
    needs: new Map<string, ModelNeeds>(),
    /** Prompt → pod key (dispatched); absent from both: ended. */
    dispatched: new Map<string, string>(),
    heldByReady: new Set<string>(),
    now: 1_000_000,
  };
  const state = (): PrefetchState => ({
    agents: w.agents,
    pods: w.pods,
    queue: w.queue.map((id) => ({ id })),
    needsOf: (id) => w.needs.get(id),
    whereIs: (id) => (w.queue.includes(id) ? undefined : (w.dispatched.get(id) ?? null)),
    heldByReady: (n) => n.files.every((f) => w.heldByReady.has(f.key)),
    now: w.now,
  });
  const prompt = (id: string, n: ModelNeeds) => {
    w.queue.push(id);
    w.needs.set(id, n);
  };
  return { w, state, prompt };
}

const ensures = (actions: PrefetchAction[]) => actions.filter((a) => a.kind === "ensure").map((a) => `${a.node} ${a.promptId} ${a.kind === "ensure" ? a.files.join("+") : ""}`);
const releases = (actions: PrefetchAction[]) => actions.filter((a) => a.kind === "release").map((a) => `${a.node} ${a.holdId}`);

describe("gateway: cold-start prefetch (which new node fetches which waiting prompt's files)", () => {
  it("the first waiting prompt's files to the first cold agent, the next other model to the next; never one model to two nodes", () => {
    const { w, state, prompt } = world();
    const p = new Prefetcher();
    prompt("p1", needs(ALPHA, LORA));
    prompt("p2", needs(ALPHA)); // the same model: not fetched on a second node
    prompt("p3", needs(BETA));
    prompt("p4", needs(GAMMA));
    assert.deepEqual(p.plan(state()), [], "no agent, nothing to ask");
    w.agents = [
      { node: "n1", url: "http://n1" },
      { node: "n2", url: "http://n2" },
    ];
    const first = p.plan(state());
    assert.deepEqual(ensures(first), [`n1 p1 ${ALPHA}+${LORA}`, `n2 p3 ${BETA}`]);
    const e = first[0];
    assert.ok(e.kind === "ensure");
    assert.equal(e.holdId, "prefetch:p1");
    assert.equal(e.ttlSeconds, PREFETCH_HOLD_SECONDS);
    assert.equal(e.url, "http://n1");
    // Stable: asked once, not again every tick.
    w.now += 1000;
    assert.deepEqual(p.plan(state()), []);
    // A third node: the next model not yet anywhere.
    w.agents.push({ node: "n3", url: "http://n3" });
    assert.deepEqual(ensures(p.plan(state())), [`n3 p4 ${GAMMA}`]);
    assert.deepEqual(p.filesOn("n1").map((f) => f.key), [ALPHA, LORA]);
    // Where a model is on its way (the dispatcher lets its prompts wait for that node's pod rather than switch a busy pod).
    assert.equal(p.aheadFor(needs(ALPHA)), "n1");
    assert.equal(p.aheadFor(needs(GAMMA)), "n3");
    assert.equal(p.aheadFor(needs("checkpoints/other.safetensors")), undefined);
  });

  it("only agents whose node has no Ready pod; a prompt whose files a Ready pod's node holds is left to it", () => {
    const { w, state, prompt } = world();
    const p = new Prefetcher();
    prompt("p1", needs(ALPHA));
    prompt("p2", needs(BETA));
    prompt("p3", needs(ALPHA)); // same model as p1: goes where p1's files are
    w.agents = [
      { node: "warm", url: "http://warm" },
      { node: "starting", url: "http://starting" },
      { node: "empty", url: "http://empty" },
    ];
    w.pods = [
      { key: "pod-warm", node: "warm", ready: true, terminating: false },
      { key: "pod-starting", node: "starting", ready: false, terminating: false },
    ];
    w.heldByReady.add(ALPHA);
    assert.deepEqual(ensures(p.plan(state())), [`starting p2 ${BETA}`], "p1 runs on the warm node; only p2 needs a fetch");
    // A terminating pod is no Ready pod: its node is cold again.
    w.pods[0] = { key: "pod-warm", node: "warm", ready: true, terminating: true };
    w.heldByReady.clear();
    assert.deepEqual(ensures(p.plan(state())), [`warm p1 ${ALPHA}`]);
  });

  it("renews the hold at half its TTL while the prompt waits on a cold node; a failed ask is retried later", () => {
    const { w, state, prompt } = world();
    const p = new Prefetcher();
    prompt("p1", needs(ALPHA));
    w.agents = [{ node: "n1", url: "http://n1" }];
    assert.equal(ensures(p.plan(state())).length, 1);
    w.now += (PREFETCH_HOLD_SECONDS * 1000) / 2 - 1;
    assert.deepEqual(p.plan(state()), []);
    w.now += 1;
    assert.deepEqual(ensures(p.plan(state())), [`n1 p1 ${ALPHA}`], "asked again: the hold renewed (and a failed fetch retried)");
    // The agent refused (or did not answer): not asked again before the retry time.
    p.failed("n1", w.now);
    assert.deepEqual(p.plan(state()), []);
    w.now += PREFETCH_RETRY_MS;
    assert.deepEqual(ensures(p.plan(state())), [`n1 p1 ${ALPHA}`]);
  });

  it("releases the hold when the prompt ended or runs on another node; keeps it while it runs on that node", () => {
    const { w, state, prompt } = world();
    const p = new Prefetcher();
    prompt("p1", needs(ALPHA));
    prompt("p2", needs(BETA));
    w.agents = [
      { node: "n1", url: "http://n1" },
      { node: "n2", url: "http://n2" },
    ];
    assert.deepEqual(ensures(p.plan(state())), [`n1 p1 ${ALPHA}`, `n2 p2 ${BETA}`]);
    // Both pods turn Ready: no more asks for those nodes; the router takes over.
    w.pods = [
      { key: "pod-1", node: "n1", ready: true, terminating: false },
      { key: "pod-2", node: "n2", ready: true, terminating: false },
    ];
    assert.deepEqual(p.plan(state()), []);
    assert.deepEqual(p.filesOn("n1"), [], "no longer fetching ahead there");
    // p1 runs on its node (the dispatcher's own hold covers it; ours stays until it ends), p2 on the other node.
    w.queue = [];
    w.dispatched.set("p1", "pod-1");
    w.dispatched.set("p2", "pod-1");
    assert.deepEqual(releases(p.plan(state())), ["n2 prefetch:p2"]);
    w.dispatched.delete("p1");
    assert.deepEqual(releases(p.plan(state())), ["n1 prefetch:p1"]);
    assert.deepEqual(p.plan(state()), [], "released once");
  });

  it("a prompt prefetched on a node is not asked of another; an agent that goes away is forgotten", () => {
    const { w, state, prompt } = world();
    const p = new Prefetcher();
    prompt("p1", needs(ALPHA));
    w.agents = [{ node: "n1", url: "http://n1" }];
    assert.equal(ensures(p.plan(state())).length, 1);
    // n1's pod turns Ready before p1 was placed (its inventory not read yet); a new node appears.
    w.pods = [{ key: "pod-1", node: "n1", ready: true, terminating: false }];
    w.agents.push({ node: "n2", url: "http://n2" });
    assert.deepEqual(p.plan(state()), [], "p1's files are on n1 already: n2 is not asked for them");
    // The node went (spot): its hold went with it; p1 may be fetched ahead elsewhere.
    w.agents = [{ node: "n2", url: "http://n2" }];
    w.pods = [];
    assert.deepEqual(ensures(p.plan(state())), [`n2 p1 ${ALPHA}`]);
  });

  it("fairOrder: the order pickNext places the queue in, across users", () => {
    const meta = (id: string, owner: string, seq: number): PromptMeta => ({ id, owner, seq, number: 0, clientId: "c", state: "queued", attempt: 0, createdAt: seq });
    const q = [meta("a1", "ann", 1), meta("a2", "ann", 2), meta("a3", "ann", 3), meta("b1", "bob", 4)];
    const none = () => ({ running: new Map<string, number>(), lastServed: new Map<string, number>() });
    assert.deepEqual([...fairOrder(q, none(), none())].map((r) => r.id), ["a1", "b1", "a2", "a3"]);
    // Bob has two running: Ann's first two go before his (each pick counts as running for the next).
    const users = { running: new Map([["bob", 2]]), lastServed: new Map<string, number>() };
    assert.deepEqual([...fairOrder(q, users, none())].map((r) => r.id), ["a1", "a2", "b1", "a3"]);
    assert.equal(users.running.get("bob"), 2, "the caller's counts are not changed");
    assert.equal(users.running.has("ann"), false);
  });
});
