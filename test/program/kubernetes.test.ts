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
    assert.equal(dep.spec.replicas, 0, "created without a GPU pod; KEDA owns the count (deploy.test.ts)");
    assert.equal(t.metadata.annotations["karpenter.sh/do-not-disrupt"], "true");
    assert.deepEqual(t.spec.nodeSelector, { "comfyui.studio/pool": "gpu" });
    assert.deepEqual(t.spec.tolerations, [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]);
    assert.equal(t.spec.terminationGracePeriodSeconds, 900);
    const c = t.spec.containers[0];
    assert.equal(c.resources.limits["nvidia.com/gpu"], "1");
    // One GPU's share of the tightest default type (g6.xlarge/g5.xlarge: 4 vCPU, 16 GiB; allocatable
    // 3920m/14162Mi) after the DaemonSets on GPU nodes (780m/529Mi, karpenter/nodeDaemonSets.ts, plus
    // 1 GiB of memory headroom) and the uploader sidecar (karpenter/gpuTypes.ts; test/program/gpuFit.test.ts).
    assert.deepEqual(c.resources.requests, { cpu: "3000m", memory: "12288Mi", "nvidia.com/gpu": "1" });
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

  it("sends everything to the gateway: internal, IP-targeted, no stickiness, WebSocket-friendly", () => {
    const ing = p.rec.one("kubernetes:networking.k8s.io/v1:Ingress").inputs;
    const a = ing.metadata.annotations;
    assert.equal(a["alb.ingress.kubernetes.io/target-type"], "ip");
    assert.equal(a["alb.ingress.kubernetes.io/scheme"], "internal");
    assert.doesNotMatch(a["alb.ingress.kubernetes.io/target-group-attributes"], /stickiness/);
    const idle = Number(/idle_timeout\.timeout_seconds=(\d+)/.exec(a["alb.ingress.kubernetes.io/load-balancer-attributes"])![1]);
    assert.ok(idle >= 3600 && idle <= 4000);
    assert.equal(a["alb.ingress.kubernetes.io/healthcheck-path"], "/healthz", "every serving replica is a healthy target, on the public port (the /gateway/* routes are internal)");
    assert.equal(a["alb.ingress.kubernetes.io/healthcheck-port"], undefined, "the traffic port: the ALB never reaches the internal one");
    assert.equal(ing.spec.ingressClassName, "alb");
    assert.deepEqual(ing.spec.defaultBackend, { service: { name: "comfyui-gateway", port: { number: 8188 } } });
    assert.equal(ing.spec.rules, undefined, "no path goes anywhere else");
    const services = Object.fromEntries(p.rec.ofType("kubernetes:core/v1:Service").map((s) => [s.inputs.metadata.name, s.inputs.spec]));
    assert.deepEqual(services["comfyui-gateway"].selector, { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "gateway" });
    assert.ok(!p.rec.ofType("kubernetes:apps/v1:Deployment").some((d) => /waker/.test(d.inputs.metadata.name)), "the waker is gone");
  });

  it("gates only the gateway pods on ALB target health (readiness gates)", () => {
    const ns = p.rec.one("kubernetes:core/v1:Namespace").inputs;
    assert.equal(ns.metadata.labels["elbv2.k8s.aws/pod-readiness-gate-inject"], "enabled");
    // The LB controller injects gates into pods its target groups select: the Ingress's only backend is
    // the gateway Service, whose selector matches no ComfyUI pod.
    const gwSelector = p.rec.ofType("kubernetes:core/v1:Service").find((s) => s.inputs.metadata.name === "comfyui-gateway")!.inputs.spec.selector;
    const comfy = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!.inputs.spec.template.metadata.labels;
    assert.ok(Object.entries(gwSelector).some(([k, v]) => comfy[k] !== v), "ComfyUI pods must not match the gateway Service");
  });

  it("runs two gateway replicas on the system nodes that are all Ready when serving, a PDB that lets one go, and least RBAC", () => {
    const gw = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui-gateway")!.inputs;
    assert.ok(gw.spec.replicas >= 2);
    assert.deepEqual(gw.spec.template.spec.nodeSelector, { "comfyui.studio/pool": "system" });
    const c = gw.spec.template.spec.containers[0];
    assert.equal(c.readinessProbe.httpGet.path, "/gateway/ready");
    assert.equal(c.readinessProbe.httpGet.port, "internal");
    assert.equal(c.livenessProbe.httpGet.path, "/gateway/health");
    assert.deepEqual(c.ports, [{ name: "http", containerPort: 8188 }, { name: "internal", containerPort: 8189 }]);
    assert.deepEqual(c.env.find((e: { name: string }) => e.name === "POD_IP").valueFrom, { fieldRef: { fieldPath: "status.podIP" } }, "the leader's address on the Lease");
    // Pulumi waits for the Deployment (no skipAwait): it completes once every replica is available, which
    // holds because readiness means serving, not leading (kubernetes pkg/controller/deployment/util DeploymentComplete).
    assert.equal(gw.metadata.annotations?.["pulumi.com/skipAwait"], undefined);
    assert.deepEqual(gw.spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
    assert.equal(c.securityContext.runAsNonRoot, true);
    const env = Object.fromEntries(c.env.filter((e: { value?: string }) => e.value !== undefined).map((e: { name: string; value: string }) => [e.name, e.value]));
    assert.equal(env.GATEWAY_MODE, "kubernetes");
    assert.equal(env.GATEWAY_COMFYUI_SERVICE, "comfyui-queue");
    for (const k of ["GATEWAY_TABLE", "GATEWAY_OUTPUTS_BUCKET", "GATEWAY_INPUTS_BUCKET", "GATEWAY_USERDATA_BUCKET", "AWS_REGION"]) assert.ok(env[k], k);
    const pdb = p.rec.ofType("kubernetes:policy/v1:PodDisruptionBudget").find((d) => d.inputs.metadata.name === "comfyui-gateway")!;
    assert.equal(pdb.inputs.spec.maxUnavailable, 1, "a drain of the node that hosts the leader finishes: the other replica serves");
    assert.equal(pdb.inputs.spec.minAvailable, undefined);
    const role = p.rec.ofType("kubernetes:rbac.authorization.k8s.io/v1:Role").find((r) => r.inputs.metadata.name === "comfyui-gateway")!;
    const verbs = Object.fromEntries(role.inputs.rules.map((r: { resources: string[]; verbs: string[] }) => [r.resources[0], r.verbs]));
    assert.deepEqual(verbs, { endpointslices: ["list", "watch"], pods: ["get", "patch"], leases: ["get", "create", "update"] });
    // Cluster-wide only to read a Node (its creation and boot-at label, for the cold-start figures).
    const cluster = p.rec.ofType("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole").filter((r) => /gateway/.test(r.name));
    assert.equal(cluster.length, 1);
    assert.deepEqual(cluster[0].inputs.rules, [{ apiGroups: [""], resources: ["nodes"], verbs: ["get"] }]);
    const binding = p.rec.ofType("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding").find((b) => b.inputs.roleRef.name === cluster[0].inputs.metadata.name)!;
    assert.deepEqual(binding.inputs.subjects, [{ kind: "ServiceAccount", name: "comfyui-gateway", namespace: "comfyui" }]);
    // Metrics: the cluster's metrics log group, under the cluster's name.
    const group = p.rec.ofType("aws:cloudwatch/logGroup:LogGroup").find((g) => g.inputs.name === env.GATEWAY_METRICS_LOG_GROUP);
    assert.ok(group, `a log group ${env.GATEWAY_METRICS_LOG_GROUP} exists`);
    assert.equal(group.inputs.name, `/comfyui/${env.GATEWAY_CLUSTER_NAME}/metrics`);
    assert.equal(group.inputs.retentionInDays, 30);
  });

  it("gives the ComfyUI pods no Kubernetes or AWS credentials, and lets only the gateway (and probes) reach them", () => {
    const comfy = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!.inputs.spec.template.spec;
    assert.equal(comfy.automountServiceAccountToken, false);
    assert.ok(!p.rec.ofType("aws:eks/podIdentityAssociation:PodIdentityAssociation").some((a) => a.inputs.serviceAccount === "comfyui"));
    const np = p.rec.ofType("kubernetes:networking.k8s.io/v1:NetworkPolicy").find((n) => n.inputs.metadata.name === "allow-gateway-to-comfyui")!.inputs.spec;
    assert.deepEqual(np.podSelector.matchLabels, { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "comfyui" });
    assert.deepEqual(np.ingress[0].from, [{ podSelector: { matchLabels: { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "gateway" } } }]);
  });

  it("scales ComfyUI with KEDA on the gateway's figure only: to zero, never an erroring per-pod trigger", () => {
    const so = p.rec.one("kubernetes:keda.sh/v1alpha1:ScaledObject").inputs.spec;
    assert.equal(so.minReplicaCount, 0);
    assert.equal(so.maxReplicaCount, 4);
    assert.equal(so.cooldownPeriod, 15 * 60);
    assert.equal(so.scaleTargetRef.name, "comfyui");
    assert.equal(so.triggers.length, 1);
    const [t] = so.triggers;
    assert.equal(t.type, "metrics-api");
    assert.equal(t.metadata.url, "http://comfyui-gateway-metrics.comfyui.svc.cluster.local:8189/gateway/scaling");
    assert.equal(t.metadata.valueLocation, "prompts");
    assert.equal(t.metadata.aggregateFromKubeServiceEndpoints, undefined, "one studio-wide figure, not a per-pod sum");
    assert.equal(t.metadata.targetValue, "2");
    const metrics = p.rec.ofType("kubernetes:core/v1:Service").find((s) => s.inputs.metadata.name === "comfyui-gateway-metrics")!.inputs.spec;
    assert.equal(metrics.publishNotReadyAddresses, true, "the standby answers too, so a hand-over never makes the trigger error");
    const release = p.rec.ofType("kubernetes:helm.sh/v3:Release").find((r) => r.inputs.chart === "keda")!;
    assert.equal(release.inputs.version, "2.20.2");
  });

  it("denies ingress by default in the namespace", () => {
    const np = p.rec.ofType("kubernetes:networking.k8s.io/v1:NetworkPolicy").find((n) => n.inputs.metadata.name === "default-deny-ingress")!;
    assert.deepEqual(np.inputs.spec, { podSelector: {}, policyTypes: ["Ingress"] });
  });
});
