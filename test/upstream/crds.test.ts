/**
 * Every custom resource the program creates, against the real CRDs at the pinned versions (Karpenter
 * v1.14.1, KEDA v2.20.2; test/upstream/README.md): structural schema and every CEL rule. And the
 * validator itself: each kind of violation is caught and named by its path.
 */
import { strict as assert } from "node:assert";
import { scaledObjectSpec } from "../../workload/autoscaling";
import { CustomResourceInvalid, Violation, crdSchemaOf, evaluateCelRule, hasCustomResourceDefinition, validateCustomResource } from "../support/crdSchema";
import { objectOf } from "../support/k8sSchemas";
import { ProgramRun, runProgram } from "../support/program";

const clone = <T>(v: T): T => structuredClone(v);

/** The violations validateCustomResource reports for obj (it must reject). */
async function violationsOf(obj: Record<string, any>): Promise<Violation[]> {
  try {
    await validateCustomResource(obj);
  } catch (e) {
    if (e instanceof CustomResourceInvalid) return e.violations;
    throw e;
  }
  assert.fail(`accepted an invalid ${obj.kind}: ${JSON.stringify(obj.spec).slice(0, 300)}`);
}

async function assertViolation(obj: Record<string, any>, path: string, message: RegExp): Promise<void> {
  const vs = await violationsOf(obj);
  assert.ok(
    vs.some((v) => v.path === path && message.test(v.message)),
    `expected a violation at ${path} matching ${message}, got:\n${vs.map((v) => `  ${v.path}: ${v.message}`).join("\n")}`,
  );
}

describe("custom resources against the vendored CRDs (schema + CEL)", function () {
  let p: ProgramRun;
  let nodePool: Record<string, any>;
  let nodeClass: Record<string, any>;
  let scaledObject: Record<string, any>;

  before(async () => {
    p = await runProgram();
    const obj = (type: string) => objectOf(type, p.rec.one(type).inputs);
    nodePool = obj("kubernetes:karpenter.sh/v1:NodePool");
    nodeClass = obj("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass");
    scaledObject = obj("kubernetes:keda.sh/v1alpha1:ScaledObject");
  });

  describe("the program's objects", () => {
    it("every custom resource the program creates is served by a vendored CRD and passes it, CEL rules included", async () => {
      const kinds = new Set<string>();
      for (const r of p.rec.kubernetesObjects()) {
        const obj = objectOf(r.type, r.inputs);
        if (isBuiltIn(obj.apiVersion)) continue;
        assert.ok(hasCustomResourceDefinition(obj.apiVersion, obj.kind), `${r.name}: no vendored CRD for ${obj.apiVersion} ${obj.kind}`);
        const res = await validateCustomResource(obj).catch((e: Error) => assert.fail(`${r.name}: ${e.message}`));
        assert.ok(res.rulesEvaluated > 0, `${r.name}: no CEL rule ran`);
        kinds.add(`${obj.apiVersion} ${obj.kind}`);
      }
      assert.deepEqual([...kinds].sort(), ["karpenter.k8s.aws/v1 EC2NodeClass", "karpenter.sh/v1 NodePool", "keda.sh/v1alpha1 ScaledObject"]);
    });

    it("the NodePool's transition rules (oldSelf) are reported as skipped on create, not passed silently", async () => {
      const res = await validateCustomResource(nodePool);
      const skipped = res.skippedTransitionRules.map((s) => `${s.path}: ${s.rule}`).sort();
      assert.deepEqual(skipped, [
        "spec.template.spec.nodeClassRef: self.group == oldSelf.group",
        "spec.template.spec.nodeClassRef: self.kind == oldSelf.kind",
        "spec: has(self.replicas) == has(oldSelf.replicas)",
      ]);
    });

    it("the working-hours cron floor variant (components test) passes the ScaledObject CRD", async () => {
      const spec = scaledObjectSpec({
        namespace: "comfyui", deployment: "comfyui", minReplicas: 0, maxReplicas: 3, queuePerPod: 1, idleMinutes: 10,
        workingHours: { start: "0 9 * * 1-5", end: "0 19 * * 1-5", timezone: "Europe/Berlin", replicas: 1 },
      });
      assert.ok((spec.triggers as { type: string }[]).some((t) => t.type === "cron"));
      await validateCustomResource({ apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "comfyui", namespace: "comfyui" }, spec });
      const none = scaledObjectSpec({ namespace: "comfyui", deployment: "comfyui", minReplicas: 1, maxReplicas: 1, queuePerPod: 2, idleMinutes: 5 });
      await validateCustomResource({ apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "comfyui", namespace: "comfyui" }, spec: none });
    });
  });

  describe("what GpuCapacity's argument checks allow and reject, the CRDs allow and reject", () => {
    // karpenter/index.ts validates consolidateAfter/expireAfter (duration or "Never"), weight [1, 100],
    // rootVolumeGiB [20, 16384], capacity types and restricted tags before anything is sent; these
    // variants of the program's own objects hold it to the real CRDs.
    it("allowed variants pass", async () => {
      for (const [consolidateAfter, expireAfter, weight, capacity] of [["90s", "Never", 1, ["on-demand"]], ["1h30m", "720h", 100, ["spot"]]] as const) {
        const np = clone(nodePool);
        np.spec.disruption.consolidateAfter = consolidateAfter;
        np.spec.template.spec.expireAfter = expireAfter;
        np.spec.weight = weight;
        np.spec.template.spec.requirements.find((r: { key: string }) => r.key === "karpenter.sh/capacity-type").values = [...capacity];
        await validateCustomResource(np).catch((e: Error) => assert.fail(`${consolidateAfter}/${expireAfter}/${weight}: ${e.message}`));
      }
      for (const size of ["20Gi", "16384Gi"]) {
        const nc = clone(nodeClass);
        nc.spec.blockDeviceMappings[0].ebs.volumeSize = size;
        await validateCustomResource(nc);
      }
    });

    it("every tag GpuCapacity refuses is refused by the EC2NodeClass CRD too", async () => {
      for (const tag of ["kubernetes.io/cluster/comfyui-dev", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim", "karpenter.k8s.aws/ec2nodeclass", "eks:eks-cluster-name"]) {
        const nc = clone(nodeClass);
        nc.spec.tags[tag] = "x";
        await assertViolation(nc, "spec.tags", /tag contains a restricted tag matching/);
      }
    });
  });

  describe("schema violations are caught with their path", () => {
    it("wrong type", async () => {
      const np = clone(nodePool);
      np.spec.weight = "high";
      await assertViolation(np, "spec.weight", /must be integer/);
      const so = clone(scaledObject);
      so.spec.minReplicaCount = "zero";
      await assertViolation(so, "spec.minReplicaCount", /must be integer/);
    });

    it("unknown field (the API server would prune it silently)", async () => {
      const nc = clone(nodeClass);
      nc.spec.metadataOptions.httpToken = "required";
      await assertViolation(nc, "spec.metadataOptions.httpToken", /unknown field/);
      const so = clone(scaledObject);
      so.spec.triggers[0].metdata = {};
      await assertViolation(so, "spec.triggers[0].metdata", /unknown field/);
    });

    it("bad pattern, enum, range, required", async () => {
      const np = clone(nodePool);
      np.spec.disruption.consolidateAfter = "5 minutes";
      await assertViolation(np, "spec.disruption.consolidateAfter", /must match pattern/);
      const np2 = clone(nodePool);
      np2.spec.disruption.consolidationPolicy = "Sometimes";
      await assertViolation(np2, "spec.disruption.consolidationPolicy", /must be equal to one of the allowed values/);
      const np3 = clone(nodePool);
      np3.spec.weight = 101;
      await assertViolation(np3, "spec.weight", /must be <= 100/);
      const nc = clone(nodeClass);
      delete nc.spec.subnetSelectorTerms;
      await assertViolation(nc, "spec", /must have required property 'subnetSelectorTerms'/);
    });

    it("null where not nullable, and bad metadata", async () => {
      const nc = clone(nodeClass);
      nc.spec.userData = null;
      await assertViolation(nc, "spec.userData", /null where the schema is not nullable/);
      const so = clone(scaledObject);
      so.metadata.labels = { ok: 1 };
      await assertViolation(so, "metadata", /must be string/);
      const np = clone(nodePool);
      np.metadata.namespace = "kube-system";
      await assertViolation(np, "metadata.namespace", /cluster-scoped/);
    });

    it("an unknown apiVersion/kind is an error, not a pass", async () => {
      await assert.rejects(validateCustomResource({ apiVersion: "karpenter.sh/v1beta1", kind: "NodePool", metadata: { name: "x" }, spec: {} }), /no vendored CRD serves karpenter\.sh\/v1beta1 NodePool/);
    });
  });

  describe("CEL violations are caught for each kind", () => {
    it("NodePool: a restricted label in the template (kubernetes.io/hostname)", async () => {
      const np = clone(nodePool);
      np.spec.template.metadata.labels["kubernetes.io/hostname"] = "gpu-1";
      await assertViolation(np, "spec.template.metadata.labels", /label "kubernetes\.io\/hostname" is restricted/);
    });

    it("NodePool: a requirement on a restricted key, and an In requirement without values", async () => {
      const np = clone(nodePool);
      np.spec.template.spec.requirements.push({ key: "karpenter.sh/nodepool", operator: "In", values: ["x"] });
      await assertViolation(np, `spec.template.spec.requirements[${np.spec.template.spec.requirements.length - 1}].key`, /label "karpenter\.sh\/nodepool" is restricted/);
      const np1 = clone(nodePool);
      np1.spec.template.metadata.labels["karpenter.sh/nodepool"] = "other";
      await assertViolation(np1, "spec.template.metadata.labels", /label "karpenter\.sh\/nodepool" is restricted/);
      const np2 = clone(nodePool);
      np2.spec.template.spec.requirements[0].values = [];
      np2.spec.template.spec.requirements[0].operator = "In";
      await assertViolation(np2, "spec.template.spec.requirements", /requirements with operator 'In' must have a value defined/);
    });

    it("NodePool: a Gt requirement on a non-integer (int() fails inside the rule)", async () => {
      const np = clone(nodePool);
      np.spec.template.spec.requirements.push({ key: "karpenter.k8s.aws/instance-cpu", operator: "Gt", values: ["four"] });
      await assertViolation(np, "spec.template.spec.requirements", /rule evaluation error/);
    });

    it("EC2NodeClass: both role and instanceProfile", async () => {
      const nc = clone(nodeClass);
      nc.spec.instanceProfile = "comfyui-gpu";
      await assertViolation(nc, "spec", /must specify exactly one of \['role', 'instanceProfile'\]/);
    });

    it("EC2NodeClass: an amiSelectorTerms alias combined with other terms", async () => {
      const nc = clone(nodeClass);
      nc.spec.amiSelectorTerms.push({ id: "ami-0123456789abcdef0" });
      await assertViolation(nc, "spec.amiSelectorTerms", /'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms/);
      const nc1 = clone(nodeClass);
      nc1.spec.amiSelectorTerms[0].id = "ami-0123456789abcdef0";
      await assertViolation(nc1, "spec.amiSelectorTerms", /'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms/);
      const nc2 = clone(nodeClass);
      nc2.spec.amiSelectorTerms[0].alias = "ubuntu@latest";
      await assertViolation(nc2, "spec.amiSelectorTerms[0].alias", /family is not supported/);
    });

    it("ScaledObject: minReplicaCount above maxReplicaCount", async () => {
      const so = clone(scaledObject);
      so.spec.minReplicaCount = 5;
      so.spec.maxReplicaCount = 2;
      await assertViolation(so, "spec", /minReplicaCount must be less than or equal to maxReplicaCount/);
    });
  });

  describe("the CEL library", () => {
    it("an unknown function fails loudly instead of passing", async () => {
      await assert.rejects(evaluateCelRule("isQuantity(self)", "1Gi"), /does not compile/);
      await assert.rejects(evaluateCelRule("self.noSuchFunction()", "x"), /does not compile/);
    });

    it("find/findAll as k8s.io/apiserver's regex library defines them", async () => {
      assert.equal(await evaluateCelRule("self.find('^[^@]+') == 'al2023'", "al2023@v20260724"), true);
      assert.equal(await evaluateCelRule("self.find('[0-9]+') == ''", "abc"), true);
      assert.equal(await evaluateCelRule("self.findAll('[0-9]') == ['1', '2']", "a1b2"), true);
      assert.equal(await evaluateCelRule("self.findAll('[0-9]', 1) == ['1']", "a1b2"), true);
    });

    it("integers are CEL ints, so comparisons with int literals work as on the API server", async () => {
      assert.equal(await evaluateCelRule("self.a + 1 == 3", { a: 2 }, { type: "object", properties: { a: { type: "integer" } } }), true);
    });

    it("the vendored CRDs declare the rules the negative tests rely on (an upgrade that drops one is seen)", () => {
      const labels = crdSchemaOf("karpenter.sh/v1", "NodePool").properties.spec.properties.template.properties.metadata.properties.labels;
      assert.ok(labels["x-kubernetes-validations"].some((r: { rule: string }) => r.rule.includes("kubernetes.io/hostname")));
    });
  });
});

/** Groups the API server serves itself: the core group, *.k8s.io, and the unsuffixed built-in groups. */
function isBuiltIn(apiVersion: string): boolean {
  if (!apiVersion.includes("/")) return true;
  const group = apiVersion.split("/")[0];
  return group.endsWith(".k8s.io") || ["apps", "batch", "policy", "autoscaling"].includes(group);
}
