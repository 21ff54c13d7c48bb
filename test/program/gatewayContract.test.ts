/**
 * The gateway's settings are one table (contracts/gateway.ts): the stack's Deployment writes its
 * env from it, and here the rendered env is loaded by the gateway's own loader; the gateway README's
 * configuration table is the table's.
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { loadConfig } from "../../workload/gateway/config";
import { PORTS, SETTINGS, settingsTableRows } from "../../contracts/gateway";
import { ProgramRun, ROOT, runProgram } from "../support/program";

describe("the gateway's settings contract", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("the Deployment's rendered env loads with the gateway's own loader, with the values the stack meant", () => {
    const gw = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui-gateway")!.inputs;
    const c = gw.spec.template.spec.containers[0];
    const env: Record<string, string> = {};
    for (const e of c.env as { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } } }[]) {
      // The downward API's fields and the Secrets' keys, as the kubelet fills them.
      if (e.valueFrom?.secretKeyRef) env[e.name] = `from-secret:${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}`;
      else env[e.name] = e.value ?? { "metadata.name": "comfyui-gateway-7d9f-abcde", "metadata.namespace": "comfyui", "status.podIP": "10.0.12.34" }[e.valueFrom!.fieldRef!.fieldPath]!;
    }
    const known = new Set([...Object.values(SETTINGS).map((s) => s.env), "GATEWAY_MODE", "POD_NAME"]);
    for (const name of Object.keys(env)) assert.ok(known.has(name), `${name} is not a gateway setting`);
    const cfg = loadConfig([], env);
    assert.equal(cfg.mode, "kubernetes");
    assert.equal(cfg.port, PORTS.public);
    assert.equal(cfg.adminPort, PORTS.internal);
    assert.deepEqual(c.ports.map((x: { containerPort: number }) => x.containerPort), [cfg.port, cfg.adminPort], "the container ports are the ones it listens on");
    assert.equal(cfg.podIp, "10.0.12.34");
    assert.equal(cfg.namespace, "comfyui");
    assert.equal(cfg.podName, "comfyui-gateway-7d9f-abcde");
    assert.equal(cfg.table, env.GATEWAY_TABLE);
    assert.equal(cfg.outputsBucket, env.GATEWAY_OUTPUTS_BUCKET);
    assert.equal(cfg.clusterName, env.GATEWAY_CLUSTER_NAME);
    assert.equal(cfg.metricsLogGroup, env.GATEWAY_METRICS_LOG_GROUP);
    assert.equal(cfg.maxUploadMb, Number(env.GATEWAY_MAX_UPLOAD_MB));
    assert.equal(cfg.internalToken, "from-secret:comfyui-gateway-internal/token");
    assert.equal(cfg.auth, "oidc");
    assert.equal(cfg.auditLogGroup, env.GATEWAY_AUDIT_LOG_GROUP);
    const probe = (x: { httpGet: { port: string } }) => c.ports.find((q: { name: string }) => q.name === x.httpGet.port).containerPort;
    assert.equal(probe(c.readinessProbe), cfg.adminPort, "the readiness probe reaches the internal port");
  });

  it("a missing or malformed value is named, with every problem at once", () => {
    assert.throws(() => loadConfig([], { GATEWAY_MODE: "kubernetes", GATEWAY_PORT: "x", GATEWAY_LEASE_SECONDS: "5", GATEWAY_LEASE_RENEW_DEADLINE_SECONDS: "6" }), (err: Error) => {
      for (const want of ["GATEWAY_PORT must be a number", "POD_IP is required", "GATEWAY_TABLE is required", "GATEWAY_LEASE_RENEW_DEADLINE_SECONDS (6) must be shorter"]) assert.ok(err.message.includes(want), `${want} in ${err.message}`);
      return true;
    });
  });

  it("the gateway README's configuration table is the contract's", () => {
    const readme = fs.readFileSync(path.join(ROOT, "workload", "gateway", "README.md"), "utf8");
    for (const row of settingsTableRows()) assert.ok(readme.includes(row), `README lacks:\n${row}`);
  });
});
