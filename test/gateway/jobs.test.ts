// ComfyUI's jobs API (/api/jobs: list, one job, cancel) through the gateway in front of two stand-ins:
// every pod's jobs in one list, from the gateway's queue and store, in ComfyUI's shapes (server.py get_jobs,
// get_job_by_id, cancel_job_by_id, cancel_jobs_batch and comfy_execution/jobs.py of the v0.38 series), per
// user as /queue and /history are. Prompts are held at their first sampler step by the stand-ins (no
// sleeps): with the gate closed each pod runs one and buffers one, and the rest wait in the gateway.
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { mintKey } from "../../workload/gateway/auth/keys";
import { MemoryAuthStore } from "../../workload/gateway/auth/stores";
import { get, startGateway, t2i, tmpDir, until } from "./helpers";
import { startStandIn, type StandIn } from "./standin";

type Job = Record<string, any> & { id: string; status: string };
type List = { jobs: Job[]; pagination: { offset: number; limit: number | null; total: number; has_more: boolean } };

describe("gateway jobs API (/api/jobs) across two pods, per user", function () {
  this.timeout(90000);
  const auth = new MemoryAuthStore();
  let pods: StandIn[] = [];
  let gw: Awaited<ReturnType<typeof startGateway>>;
  // The gate every sampler step waits on: open lets prompts run, closed holds them where they are.
  let gate: Promise<void> = Promise.resolve();
  let release = () => {};
  const hold = () => (gate = new Promise<void>((r) => (release = r)));
  const open = () => release();
  const users: Record<string, Record<string, string>> = {};

  const call = async (user: string, method: string, p: string, body?: unknown) => {
    const r = await fetch(gw.url + p, { method, headers: users[user], ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }) });
    const text = await r.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = text;
    }
    return { status: r.status, json };
  };
  const list = async (user: string, qs = "") => {
    const r = await call(user, "GET", `/api/jobs${qs}`);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json as List;
  };
  const submit = async (user: string, seed: number, extra: Record<string, unknown> = {}) => {
    const r = await call(user, "POST", "/prompt", { prompt: t2i(seed), client_id: `${user}-tab`, ...extra });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json.prompt_id as string;
  };
  const done = (user: string, id: string) => until(async () => (await call(user, "GET", `/history/${id}`)).json[id]);

  before(async () => {
    pods = await Promise.all([0, 1].map(() => startStandIn({ stepMs: 1, beforeStep: () => gate })));
    gw = await startGateway(pods.map((p) => p.url), ["--auth", "keys"], tmpDir(), { auth });
    for (const [owner, admin] of [["alice", false], ["bob", false], ["root", true]] as const) {
      const { token, record } = mintKey({ owner, name: owner, scopes: ["submit", "read"], days: 1, admin });
      await auth.putKey(record);
      users[owner] = { authorization: `Bearer ${token}` };
    }
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 2);
  });
  after(async () => {
    open();
    await gw?.close();
    await Promise.all(pods.map((p) => p.close()));
  });

  it("lists finished jobs of both pods in ComfyUI's shape, newest first, each user their own and an admin everyone's", async () => {
    const wf = randomUUID();
    const chosen = randomUUID();
    // Held, so two prompts are on the two pods at once (the dispatcher fills the emptiest pod first).
    hold();
    const a1 = await submit("alice", 1, { prompt_id: chosen, extra_data: { extra_pnginfo: { workflow: { id: wf } } } });
    const a2 = await submit("alice", 2);
    const b1 = await submit("bob", 3);
    await until(async () => pods.every((p) => p.executed().length === 1));
    open();
    for (const [u, id] of [["alice", a1], ["alice", a2], ["bob", b1]]) await done(u, id);
    const ranOn = pods.map((p) => p.executed());
    assert.ok(ranOn[0].length >= 1 && ranOn[1].length >= 1, `both pods ran a job: ${JSON.stringify(ranOn)}`);
    assert.equal(a1, chosen, "a client-chosen canonical UUID is the job's id");

    const mine = await list("alice");
    assert.deepEqual(mine.jobs.map((j) => j.id).sort(), [a1, a2].sort(), "alice sees her jobs only, from both pods");
    assert.deepEqual(mine.pagination, { offset: 0, limit: null, total: 2, has_more: false });
    const j = mine.jobs.find((x) => x.id === a1)!;
    // jobs.py normalize_history_item (list form: no outputs/workflow), None values pruned.
    assert.deepEqual(Object.keys(j).sort(), ["create_time", "execution_end_time", "execution_start_time", "id", "outputs_count", "preview_output", "previewable_outputs_count", "priority", "status", "workflow_id"]);
    assert.equal(j.status, "completed");
    assert.equal(j.workflow_id, wf);
    assert.equal(j.outputs_count, 1);
    assert.equal(j.previewable_outputs_count, 1);
    assert.equal(j.preview_output.nodeId, "9");
    assert.equal(j.preview_output.mediaType, "images");
    assert.equal(j.preview_output.type, "output");
    assert.match(j.preview_output.filename, /\.png$/);
    assert.ok(typeof j.create_time === "number" && j.execution_end_time >= j.execution_start_time);
    assert.ok(!("workflow_id" in mine.jobs.find((x) => x.id === a2)!), "no workflow id: the key is left out");
    assert.deepEqual((await list("bob")).jobs.map((x) => x.id), [b1]);
    const all = await list("root");
    assert.deepEqual(all.jobs.map((x) => x.id).sort(), [a1, a2, b1].sort(), "an admin sees every user's jobs");
    for (let i = 1; i < all.jobs.length; i++) assert.ok(all.jobs[i - 1].create_time >= all.jobs[i].create_time, "newest first by default");
    const asc = await list("root", "?sort_order=ASC");
    assert.deepEqual(asc.jobs.map((x) => x.id).sort(), all.jobs.map((x) => x.id).sort());
    for (let i = 1; i < asc.jobs.length; i++) assert.ok(asc.jobs[i - 1].create_time <= asc.jobs[i].create_time);
    assert.deepEqual((await list("alice", `?workflow_id=${wf}`)).jobs.map((x) => x.id), [a1]);
    const byDuration = await list("root", "?sort_by=execution_duration&sort_order=desc");
    const d = (x: Job) => x.execution_end_time - x.execution_start_time;
    for (let i = 1; i < byDuration.jobs.length; i++) assert.ok(d(byDuration.jobs[i - 1]) >= d(byDuration.jobs[i]));

    // One job: the history form with outputs, execution_status and workflow.
    const one = await call("alice", "GET", `/api/jobs/${a1}`);
    assert.equal(one.status, 200);
    assert.deepEqual(Object.keys(one.json).sort(), ["create_time", "execution_end_time", "execution_start_time", "execution_status", "id", "outputs", "outputs_count", "preview_output", "previewable_outputs_count", "priority", "status", "workflow", "workflow_id"]);
    assert.equal(one.json.outputs["9"].images[0].filename, j.preview_output.filename);
    assert.equal(one.json.execution_status.status_str, "success");
    assert.deepEqual(one.json.workflow.prompt, t2i(1));
    assert.deepEqual(one.json.workflow.extra_data.extra_pnginfo, { workflow: { id: wf } });
    assert.deepEqual(await call("bob", "GET", `/api/jobs/${a1}`), { status: 404, json: { error: "Job not found" } }, "another user's job is unknown");
    assert.equal((await call("root", "GET", `/api/jobs/${a1}`)).status, 200);
    assert.deepEqual(await call("alice", "GET", `/api/jobs/${randomUUID()}`), { status: 404, json: { error: "Job not found" } });
    assert.deepEqual(await call("alice", "GET", "/api/jobs/not-a-uuid"), { status: 404, json: { error: "Job not found" } });
    assert.equal((await call("alice", "GET", "/jobs")).status, 404, "declared with its /api prefix upstream: no bare /jobs");
  });

  it("client-chosen ids: a canonical lowercase UUID or 400 invalid_prompt_id; a retry is the same job, another user's id is refused", async () => {
    const id = randomUUID();
    for (const bad of [id.toUpperCase(), `{${id}}`, id.replace(/-/g, ""), 42]) {
      const r = await call("alice", "POST", "/prompt", { prompt: t2i(7), prompt_id: bad });
      assert.equal(r.status, 400, String(bad));
      assert.equal(r.json.error.type, "invalid_prompt_id");
    }
    assert.equal(await submit("alice", 8, { prompt_id: id }), id);
    assert.equal(await submit("alice", 8, { prompt_id: id }), id, "the same user's retry answers the stored job");
    await done("alice", id);
    const theirs = await call("bob", "POST", "/prompt", { prompt: t2i(9), prompt_id: id });
    assert.equal(theirs.status, 400);
    assert.equal(theirs.json.error.type, "invalid_prompt_id");
    assert.ok(!(await list("bob")).jobs.some((x) => x.id === id));
    assert.equal((await list("alice", "?status=completed")).jobs.filter((x) => x.id === id).length, 1, "listed once, never run twice");
  });

  it("in_progress and pending across both pods, status filters, paging, and the validation ComfyUI answers", async () => {
    hold();
    const ids: string[] = [];
    for (let s = 0; s < 5; s++) ids.push(await submit("alice", 100 + s));
    // Two run (one per pod), two are buffered on the pods, one waits in the gateway.
    await until(async () => {
      const q = (await call("alice", "GET", "/queue")).json;
      return q.queue_running.length === 2 && q.queue_pending.length === 3;
    });
    const open5 = await list("alice", "?status=in_progress,%20PENDING");
    assert.equal(open5.pagination.total, 5);
    assert.deepEqual(open5.jobs.map((x) => x.id).sort(), [...ids].sort());
    assert.equal(open5.jobs.filter((x) => x.status === "in_progress").length, 2);
    assert.equal(open5.jobs.filter((x) => x.status === "pending").length, 3);
    const running = open5.jobs.find((x) => x.status === "in_progress")!;
    // jobs.py normalize_queue_item: no execution times, no outputs yet.
    assert.deepEqual(Object.keys(running).sort(), ["create_time", "id", "outputs_count", "previewable_outputs_count", "priority", "status"]);
    assert.deepEqual([running.outputs_count, running.previewable_outputs_count], [0, 0]);
    const detail = await call("alice", "GET", `/api/jobs/${running.id}`);
    assert.equal(detail.json.status, "in_progress");
    assert.deepEqual(detail.json.workflow.prompt, t2i(100 + ids.indexOf(running.id)));
    assert.deepEqual((await list("bob", "?status=in_progress,pending")).jobs, [], "bob sees none of alice's open jobs");
    assert.equal((await list("root", "?status=pending")).pagination.total, 3);

    // Paging over everything alice has: newest first, offset then limit, total before paging.
    const everything = await list("alice");
    const page = await list("alice", "?limit=2&offset=1");
    assert.deepEqual(page.pagination, { offset: 1, limit: 2, total: everything.pagination.total, has_more: 3 < everything.pagination.total });
    assert.deepEqual(page.jobs.map((x) => x.id), everything.jobs.slice(1, 3).map((x) => x.id));
    const last = await list("alice", `?offset=${everything.pagination.total - 1}&limit=5`);
    assert.equal(last.jobs.length, 1);
    assert.equal(last.pagination.has_more, false);
    assert.equal((await list("alice", "?offset=-4")).pagination.offset, 0, "a negative offset is 0");
    assert.equal((await list("alice", "?limit=%201_0%20")).pagination.limit, 10, "Python's int(): spaces and underscores");
    for (const [qs, error] of [
      ["?limit=0", "limit must be a positive integer"],
      ["?limit=ten", "limit must be an integer"],
      ["?offset=1.5", "offset must be an integer"],
      ["?status=done,pending", "Invalid status value(s): done. Valid values: pending, in_progress, completed, failed, cancelled"],
      ["?sort_by=name", "sort_by must be 'created_at' or 'execution_duration'"],
      ["?sort_order=up", "sort_order must be 'asc' or 'desc'"],
    ]) assert.deepEqual(await call("alice", "GET", `/api/jobs${qs}`), { status: 400, json: { error } }, qs);

    // Cancel: a pending job leaves the queue (and has no history), a running one is interrupted.
    const pendingId = open5.jobs.find((x) => x.status === "pending")!.id;
    assert.deepEqual((await call("bob", "POST", `/api/jobs/${pendingId}/cancel`)).json, { cancelled: false }, "not bob's to cancel");
    assert.deepEqual((await call("alice", "POST", `/api/jobs/${pendingId}/cancel`)).json, { cancelled: true });
    assert.deepEqual(await call("alice", "GET", `/api/jobs/${pendingId}`), { status: 404, json: { error: "Job not found" } });
    assert.deepEqual((await call("alice", "POST", `/api/jobs/${running.id}/cancel`)).json, { cancelled: true });
    open();
    const rest = ids.filter((x) => x !== pendingId);
    for (const id of rest) await done("alice", id);
    const cancelled = await call("alice", "GET", `/api/jobs/${running.id}`);
    assert.equal(cancelled.json.status, "cancelled", "an interrupted job is cancelled, not failed");
    assert.equal(cancelled.json.execution_status.status_str, "error");
    assert.deepEqual((await list("alice", "?status=cancelled")).jobs.map((x) => x.id), [running.id]);
    assert.deepEqual((await call("alice", "POST", `/api/jobs/${running.id}/cancel`)).json, { cancelled: false }, "a finished job: a no-op");
    assert.deepEqual((await call("alice", "POST", `/api/jobs/${randomUUID()}/cancel`)).json, { cancelled: false }, "an unknown id: a no-op");
  });

  it("a failed job, and the batch cancel's rules: malformed ids refused up front, finished ones no-ops", async () => {
    for (const p of pods) p.setFault({ kind: "execution_error" });
    const bad = await submit("alice", 200);
    await done("alice", bad);
    for (const p of pods) p.setFault(undefined);
    const failed = await call("alice", "GET", `/api/jobs/${bad}`);
    assert.equal(failed.json.status, "failed");
    assert.equal(failed.json.execution_error.prompt_id, bad, "the execution_error event's data");
    assert.ok((await list("alice", "?status=failed")).jobs.some((x) => x.id === bad));

    assert.deepEqual(await call("alice", "POST", "/api/jobs/cancel", "{nope"), { status: 400, json: { error: "Request body must be valid JSON" } });
    assert.deepEqual(await call("alice", "POST", "/api/jobs/cancel", { job_ids: "x" }), { status: 400, json: { error: "job_ids must be a list" } });
    assert.deepEqual(await call("alice", "POST", "/api/jobs/cancel", [1]), { status: 400, json: { error: "job_ids must be a list" } });
    const id = randomUUID();
    assert.deepEqual(await call("alice", "POST", "/api/jobs/cancel", { job_ids: [id, "nope", 123, null, { a: [true] }, id.toUpperCase()] }), {
      status: 400, json: { error: "job_ids contains invalid id(s)", invalid_ids: ["nope", "123", "None", "{'a': [True]}", id.toUpperCase()] },
    });
    hold();
    const a = await submit("alice", 300);
    const b = await submit("alice", 301);
    const c = await submit("alice", 302);
    await until(async () => (await list("alice", "?status=in_progress,pending")).pagination.total === 3);
    assert.deepEqual((await call("alice", "POST", "/api/jobs/cancel", { job_ids: [bad, randomUUID()] })).json, { cancelled: false }, "finished and unknown ids only");
    assert.deepEqual((await call("bob", "POST", "/api/jobs/cancel", { job_ids: [a, b, c] })).json, { cancelled: false }, "none of them bob's");
    assert.deepEqual((await call("alice", "POST", "/api/jobs/cancel", { job_ids: [bad, a, b, c] })).json, { cancelled: true });
    open();
    await until(async () => (await list("alice", "?status=in_progress,pending")).pagination.total === 0);
    for (const x of [a, b, c]) {
      const r = await call("alice", "GET", `/api/jobs/${x}`);
      assert.ok(r.status === 404 || r.json.status === "cancelled", `${x}: taken off the queue or interrupted (${JSON.stringify(r.json)})`);
    }
  });
});
