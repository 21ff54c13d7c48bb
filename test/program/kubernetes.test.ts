/**
 * Every Kubernetes object the program creates, validated against the Kubernetes, Karpenter v1 and
 * KEDA schemas — and the properties the design depends on.
 */
import { strict as assert } from "node:assert";
import { objectOf, validateK8s } from "../support/k8sSchemas";
import { ProgramRun, runProgram } from "../support/program";

describe("Kubernetes objects of the whole program", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("all validate against their schemas", async () => {
    const objects = p.rec.kubernetesObjects();
    assert.ok(objects.length >= 20, `only ${objects.length} objects recorded`);
    const kinds = new Set<string>();
    for (const r of objects) {
      const obj = objectOf(r.type, r.inputs);
      kinds.add(`${obj.apiVersion} ${obj.kind}`);
      await validateK8s(obj).catch((e: Error) => assert.fail(`${r.name} (${obj.apiVersion} ${obj.kind}): ${e.message}`));
    }
    for (const k of ["apps/v1 Deployment", "v1 Service", "networking.k8s.io/v1 Ingress", "keda.sh/v1alpha1 ScaledObject", "karpenter.sh/v1 NodePool", "karpenter.k8s.aws/v1 EC2NodeClass", "policy/v1 PodDisruptionBudget", "networking.k8s.io/v1 NetworkPolicy"]) {
      assert.ok(kinds.has(k), `missing ${k}`);
    }
  });

  it("a schema violation is caught (the validator is not a no-op)", async () => {
    await assert.rejects(validateK8s({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: { replicas: "many" } }));
    await assert.rejects(validateK8s({ apiVersion: "karpenter.sh/v1", kind: "NodePool", metadata: { name: "x" }, spec: { disruption: { consolidationPolicy: "Sometimes" } } }));
    await assert.rejects(validateK8s({ apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "x" }, spec: { minReplicaCount: "zero" } }));
  });

  it("runs ComfyUI on GPU nodes only, non-root, with probes, drain and do-not-disrupt", () => {
    const dep = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!.inputs;
    const t = dep.spec.template;
    assert.equal(dep.spec.replicas, undefined, "KEDA owns replicas");
    assert.equal(t.metadata.annotations["karpenter.sh/do-not-disrupt"], "true");
    assert.deepEqual(t.spec.nodeSelector, { "comfyui.studio/pool": "gpu" });
    assert.deepEqual(t.spec.tolerations, [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]);
    assert.equal(t.spec.terminationGracePeriodSeconds, 900);
    const c = t.spec.containers[0];
    assert.equal(c.resources.limits["nvidia.com/gpu"], "1");
    assert.deepEqual(c.resources.requests, { cpu: "3", memory: "12Gi", "nvidia.com/gpu": "1" }, "sized to g6.xlarge/g5.xlarge (4 vCPU, 16 GiB)");
    assert.equal(c.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(t.spec.securityContext.runAsUser, 1000);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) assert.ok(c[probe]?.httpGet?.path, probe);
    assert.deepEqual(c.lifecycle.preStop.exec.command.slice(0, 2), ["python3", "/opt/comfyui-tools/drain.py"]);
    assert.ok(Number(c.lifecycle.preStop.exec.command[5]) < t.spec.terminationGracePeriodSeconds);
    const models = c.volumeMounts.find((m: { name: string }) => m.name === "models");
    assert.deepEqual(models, { name: "models", mountPath: "/app/ComfyUI/models", readOnly: true });
    assert.equal(t.spec.volumes.find((v: { name: string }) => v.name === "models").hostPath.path, "/mnt/k8s-disks/0/comfyui-models");
    assert.equal(t.spec.initContainers[0].restartPolicy, "Always", "uploader is a native sidecar");
  });

  it("makes the ALB sticky, WebSocket-friendly, internal and IP-targeted", () => {
    const ing = p.rec.one("kubernetes:networking.k8s.io/v1:Ingress").inputs;
    const a = ing.metadata.annotations;
    assert.equal(a["alb.ingress.kubernetes.io/target-type"], "ip");
    assert.match(a["alb.ingress.kubernetes.io/target-group-attributes"], /stickiness\.enabled=true/);
    assert.match(a["alb.ingress.kubernetes.io/target-group-attributes"], /stickiness\.type=lb_cookie/);
    const idle = Number(/idle_timeout\.timeout_seconds=(\d+)/.exec(a["alb.ingress.kubernetes.io/load-balancer-attributes"])![1]);
    assert.ok(idle >= 3600 && idle <= 4000);
    assert.equal(a["alb.ingress.kubernetes.io/healthcheck-path"], "/prompt");
    assert.equal(ing.spec.ingressClassName, "alb");
  });

  it("scales ComfyUI with KEDA: to zero, on queues, woken by the waker", () => {
    const so = p.rec.one("kubernetes:keda.sh/v1alpha1:ScaledObject").inputs.spec;
    assert.equal(so.minReplicaCount, 0);
    assert.equal(so.maxReplicaCount, 4);
    assert.equal(so.cooldownPeriod, 15 * 60);
    assert.equal(so.scaleTargetRef.name, "comfyui");
    const [queue, demand] = so.triggers;
    assert.equal(queue.metadata.url, "http://comfyui-queue.comfyui.svc.cluster.local:8848/prompt");
    assert.equal(queue.metadata.aggregationType, "sum");
    assert.equal(queue.metadata.targetValue, "2");
    assert.equal(demand.metadata.url, "http://comfyui-waker.comfyui.svc.cluster.local:9090/demand");
    const services = Object.fromEntries(p.rec.ofType("kubernetes:core/v1:Service").map((s) => [s.inputs.metadata.name, s.inputs.spec]));
    assert.deepEqual(services["comfyui-queue"].selector, { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "comfyui" });
    assert.deepEqual(services["comfyui"].selector, { "comfyui.studio/serves": "ui" });
    const deps = Object.fromEntries(p.rec.ofType("kubernetes:apps/v1:Deployment").map((d) => [d.inputs.metadata.name, d.inputs.spec.template.metadata.labels]));
    assert.equal(deps["comfyui"]["comfyui.studio/serves"], "ui");
    assert.equal(deps["comfyui-waker"]["comfyui.studio/serves"], "ui");
    const release = p.rec.ofType("kubernetes:helm.sh/v3:Release").find((r) => r.inputs.chart === "keda")!;
    assert.equal(release.inputs.version, "2.20.2");
  });

  it("denies ingress by default in the namespace", () => {
    const np = p.rec.ofType("kubernetes:networking.k8s.io/v1:NetworkPolicy").find((n) => n.inputs.metadata.name === "default-deny-ingress")!;
    assert.deepEqual(np.inputs.spec, { podSelector: {}, policyTypes: ["Ingress"] });
  });
});
