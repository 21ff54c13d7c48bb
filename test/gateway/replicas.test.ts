// Gateway replicas in Kubernetes mode, as processes: a fake Kubernetes API server (Lease, EndpointSlices),
// the embedded DynamoDB (dynalite) and S3 (s3rver) that both processes share, two ComfyUI stand-ins.
// A rollout in the Deployment's order (a new replica starts and turns Ready, then the old leader gets
// SIGTERM) and a SIGKILL of the leader, with clients connected to different replicas and prompts
// running across each hand-over.
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import WebSocket from "ws";
import { startEmbeddedStore } from "../../workload/gateway/store/embedded";
import { startS3 } from "../karpenter/userdataHelpers";
import { freePort, spawnGateway, type GatewayProcess } from "./cli";
import { startFakeKube, type FakeKube } from "./fakeKube";
import { get, t2i, tmpDir, until } from "./helpers";
import { startStandIn, type StandIn } from "./standin";

const NS = "comfy";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A ComfyUI client: one socket to whichever replica it is pointed at; records every text message. */
class Client {
  readonly messages: { type: string; data: any }[] = [];
  ws: WebSocket | undefined;
  closedWith: number | undefined;
  constructor(readonly id: string) {}
  async connect(base: string): Promise<void> {
    const ws = new WebSocket(base.replace(/^http/, "ws") + `/ws?clientId=${this.id}`);
    this.ws = ws;
    this.closedWith = undefined;
    ws.on("message", (d, bin) => {
      if (!bin) this.messages.push(JSON.parse(d.toString()));
    });
    ws.on("close", (code) => (this.closedWith = code));
    ws.on("error", () => undefined);
    await new Promise<void>((res, rej) => {
      ws.once("open", () => res());
      ws.once("error", rej);
    });
  }
  of(id: string, type: string) {
    return this.messages.filter((m) => m.type === type && m.data?.prompt_id === id);
  }
  close() {
    this.ws?.terminate();
  }
}

async function submit(base: string, clientId: string, seed: number, steps: number): Promise<string> {
  const id = randomUUID();
  const r = await fetch(base + "/prompt", { method: "POST", body: JSON.stringify({ prompt: t2i(seed, undefined, steps), client_id: clientId, prompt_id: id }) });
  assert.equal(r.status, 200, await r.text());
  return id;
}

/** The step at which a running prompt waits for the hand-over under test to finish (of 150). */
const MID_STEP = 75;
/** Resolved once the new leader leads; a fresh one per hand-over. */
let handover: Promise<void> = Promise.resolve();
let handedOver = () => {};
const holdUntilHandover = () => (handover = new Promise<void>((r) => (handedOver = r)));

describe("gateway replicas (Kubernetes mode, processes)", function () {
  this.timeout(180000);
  let kube: FakeKube;
  let db: Awaited<ReturnType<typeof startEmbeddedStore>>;
  let s3: Awaited<ReturnType<typeof startS3>>;
  const pods: StandIn[] = [];
  const gws: GatewayProcess[] = [];
  const clients: Client[] = [];
  const dirs: string[] = [];

  before(async () => {
    kube = await startFakeKube(NS);
    const dbDir = tmpDir("gw-replicas-db-");
    const s3Dir = tmpDir("gw-replicas-s3-");
    dirs.push(dbDir, s3Dir);
    db = await startEmbeddedStore({ dbPath: path.join(dbDir, "db"), table: "comfyui-gateway" });
    s3 = await startS3(s3Dir, "outputs");
    // s3rver makes the buckets it is configured with; the other two by a plain PUT.
    for (const b of ["inputs", "userdata"]) assert.equal((await fetch(`${s3.endpoint}/${b}`, { method: "PUT" })).status, 200);
    // Each prompt pauses at its middle step while a hand-over is under way (held below), so "progress kept
    // coming across the hand-over" is about the hand-over, not about whether the machine was quick enough
    // to finish it before the prompt ended.
    for (let i = 0; i < 2; i++) pods.push(await startStandIn({ stepMs: 40, beforeStep: (_id, step) => (step === MID_STEP ? handover : Promise.resolve()) }));
    kube.setEndpoints("comfyui-queue", pods.map((p, i) => ({ pod: `comfyui-${i}`, ip: "127.0.0.1", port: p.port, ready: true })));
  });

  after(async () => {
    handedOver(); // never leave a held step behind
    for (const c of clients) c.close();
    await Promise.all(gws.map((g) => g.killAll()));
    await Promise.all(pods.map((p) => p.close()));
    await db?.close();
    await s3?.close();
    await kube?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  const start = async (name: string): Promise<GatewayProcess> => {
    const [port, adminPort] = [await freePort(), await freePort()];
    const g = await spawnGateway([], {
      env: {
        // Sign-in is tested on its own (auth.test.ts); here the replicas listen on loopback without it.
        GATEWAY_MODE: "kubernetes", GATEWAY_AUTH: "none", GATEWAY_INTERNAL_TOKEN: "replicas-test-token", GATEWAY_KUBE_API_URL: kube.url, POD_NAME: name, POD_NAMESPACE: NS, POD_IP: "127.0.0.1",
        GATEWAY_PORT: String(port), GATEWAY_ADMIN_PORT: String(adminPort), GATEWAY_HOST: "127.0.0.1", GATEWAY_TABLE: "comfyui-gateway",
        AWS_REGION: "local", AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_EC2_METADATA_DISABLED: "true",
        AWS_CONFIG_FILE: "/dev/null", AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
        AWS_ENDPOINT_URL_DYNAMODB: db.endpoint, AWS_ENDPOINT_URL_S3: s3.endpoint,
        GATEWAY_OUTPUTS_BUCKET: "outputs", GATEWAY_INPUTS_BUCKET: "inputs", GATEWAY_USERDATA_BUCKET: "userdata", GATEWAY_CLUSTER_NAME: "test",
        // Short Lease timings keep the test short; the rules are the production ones (deadline < lease).
        GATEWAY_LEASE_SECONDS: "4", GATEWAY_LEASE_RENEW_DEADLINE_SECONDS: "2.5", GATEWAY_LEASE_RETRY_SECONDS: "0.5",
      },
    });
    gws.push(g);
    return g;
  };
  const readiness = async (g: GatewayProcess) => (await get(g.adminUrl, "/gateway/ready").catch(() => ({ status: 0, json: undefined })));
  const roleOf = async (g: GatewayProcess) => (await readiness(g)).json?.role as string | undefined;

  it("a rollout and a SIGKILL of the leader: every replica Ready, nothing lost or run twice, the running prompts' clients get their events and images", async () => {
    try {
      await rolloutAndKill();
    } catch (err) {
      // What each replica said, to find the cause of a failure.
      for (const g of gws) console.log(`---- ${g.url}\n${g.lines.filter((l) => !/"(incoming request|request completed)"/.test(l)).slice(-40).join("\n")}`);
      throw err;
    }
  });

  async function rolloutAndKill() {
    const a = await start("gw-a");
    await until(async () => (await roleOf(a)) === "leader", 30000);
    const b = await start("gw-b");
    await until(async () => (await roleOf(b)) === "follower", 30000);
    for (const g of [a, b]) assert.equal((await readiness(g)).status, 200, "both replicas answer the readiness path");
    await until(async () => (await get(a.adminUrl, "/gateway/pods")).json?.ready === 2, 30000);
    await until(async () => (await get(b.url, "/object_info/KSampler")).json?.KSampler, 30000);

    // ---- rollout: X on the follower, Y on the leader, a long prompt each ---------------------------------
    const x = new Client("artist-x");
    const y = new Client("artist-y");
    clients.push(x, y);
    await x.connect(b.url);
    await y.connect(a.url);
    holdUntilHandover();
    const p1 = await submit(b.url, x.id, 1, 150);
    const p2 = await submit(a.url, y.id, 2, 150);
    await until(async () => x.of(p1, "execution_start").length > 0 && y.of(p2, "execution_start").length > 0, 30000);
    assert.ok(x.of(p1, "execution_start").length > 0, "a follower's client hears the leader's events");

    const c = await start("gw-c");
    await until(async () => (await readiness(c)).status === 200, 30000);
    assert.equal(await roleOf(c), "follower", "the new replica serves before the old one leaves");
    const progressBefore = { x: x.of(p1, "progress").length, y: y.of(p2, "progress").length };
    assert.deepEqual(await a.kill("SIGTERM"), { code: 0, signal: null });
    await until(async () => y.closedWith !== undefined, 10000);
    assert.equal(y.closedWith, 1012, "the old leader's clients are told to reconnect");
    await y.connect(c.url); // the load balancer sends it to a replica that serves
    await until(async () => (await roleOf(b)) === "leader" || (await roleOf(c)) === "leader", 30000);
    handedOver();
    for (const [cl, id] of [[x, p1], [y, p2]] as const) {
      await until(async () => cl.of(id, "execution_success").length > 0 && cl.messages.some((m) => m.type === "executing" && m.data.node === null && m.data.prompt_id === id), 60000);
      assert.ok(cl.of(id, "executed").length === 1, `${cl.id}: executed once`);
    }
    assert.ok(x.of(p1, "progress").length > progressBefore.x, "progress of the running prompt kept coming across the hand-over");
    assert.ok(y.of(p2, "progress").length > progressBefore.y, "… also to the client that reconnected");
    for (const [id, g] of [[p1, b], [p2, c]] as const) {
      const e = (await get(g.url, `/history/${id}`)).json[id];
      assert.equal(e.status.status_str, "success");
      const img = e.outputs["9"].images[0];
      const v = await get(g.url, `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=output`);
      assert.equal(v.status, 200);
      assert.equal(v.buf.subarray(1, 4).toString("latin1"), "PNG");
    }

    // ---- SIGKILL of the leader, a prompt running, its client on the survivor -----------------------------
    const leader = (await roleOf(b)) === "leader" ? b : c;
    const survivor = leader === b ? c : b;
    const z = new Client("artist-z");
    clients.push(z);
    await z.connect(survivor.url);
    holdUntilHandover();
    const p3 = await submit(survivor.url, z.id, 3, 150);
    await until(async () => z.of(p3, "execution_start").length > 0, 30000);
    assert.equal((await leader.kill("SIGKILL")).signal, "SIGKILL");
    const killedAt = Date.now();
    // The API keeps answering on the survivor (the store serves; the queue needs no leader).
    let lastOk = Date.now();
    let worstGap = 0;
    while ((await roleOf(survivor)) !== "leader") {
      const r = await fetch(survivor.url + "/queue", { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
      if (r?.status === 200) {
        worstGap = Math.max(worstGap, Date.now() - lastOk);
        lastOk = Date.now();
      }
      assert.ok(Date.now() - killedAt < 60000, "the survivor takes the lead");
      await sleep(200);
    }
    assert.ok(worstGap < 30000, `the API answered throughout (worst gap ${worstGap} ms)`);
    const progressAtTakeover = z.of(p3, "progress").length;
    handedOver();
    await until(async () => z.of(p3, "execution_success").length > 0, 60000);
    assert.ok(z.of(p3, "progress").length > progressAtTakeover, "progress kept coming from the new leader");
    assert.equal(z.of(p3, "executed").length, 1);
    const e3 = (await get(survivor.url, `/history/${p3}`)).json[p3];
    assert.equal(e3.status.status_str, "success");
    assert.equal((await get(survivor.url, `/view?filename=${encodeURIComponent(e3.outputs["9"].images[0].filename)}&subfolder=${encodeURIComponent(e3.outputs["9"].images[0].subfolder)}`)).status, 200);

    // ---- nothing lost, nothing run twice --------------------------------------------------------------
    const runs = pods.flatMap((p) => p.executed());
    for (const id of [p1, p2, p3]) assert.equal(runs.filter((r) => r === id).length, 1, `${id} ran once: ${runs}`);
    const all = (await get(survivor.url, "/history")).json;
    assert.deepEqual(Object.keys(all).sort(), [p1, p2, p3].sort());
    assert.deepEqual((await get(survivor.url, "/queue")).json, { queue_running: [], queue_pending: [] });
  }
});
