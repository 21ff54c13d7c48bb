/**
 * A GPU pod fits the GPU node it asks for, next to every DaemonSet that runs there. The program is
 * evaluated with only g6.xlarge configured (and, as a control, with Pulumi.dev.yaml's mixed types);
 * from its graph come the ComfyUI pod's requests, the GPU NodePool's labels and taints, and every
 * installer of DaemonSets (EKS add-ons, Helm releases, DaemonSets of its own), whose DaemonSets and
 * requests are derived from the vendored charts and manifests (test/support/gpuNodeDaemonSets.ts).
 * Allocatable is Karpenter's own figure for the type (test/upstream/ec2/README.md), which
 * karpenter/gpuTypes.ts allocatable() reproduces from the kubelet reservation formulas.
 */
import { strict as assert } from "node:assert";
import { GPU_NODE_DAEMONSETS, gpuNodeDaemonSetRequests } from "../../karpenter/nodeDaemonSets";
import { EC2_DATA, karpenterAllocatable } from "../support/ec2Data";
import { ModelDaemonSet, Taint, daemonSetsOf, landsOn, podRequests } from "../support/gpuNodeDaemonSets";
import { RecordedResource } from "../support/mocks";
import { ProgramRun, runProgram, runProgramWith } from "../support/program";

interface GpuNode {
  labels: Record<string, string>;
  taints: Taint[];
}

/** The node Karpenter makes of the graph's GPU NodePool for an instance type: its labels (the type's, the pool's, the well-known ones) and taints. */
function gpuNode(p: ProgramRun, instanceType: string): GpuNode {
  const pool = p.rec.one("kubernetes:karpenter.sh/v1:NodePool").inputs.spec.template;
  const requirement = (key: string) => pool.spec.requirements.find((r: { key: string }) => r.key === key);
  assert.ok(requirement("node.kubernetes.io/instance-type").values.includes(instanceType), `the NodePool allows ${instanceType}`);
  return {
    labels: {
      ...EC2_DATA.types[instanceType].labels,
      ...pool.metadata.labels,
      "node.kubernetes.io/instance-type": instanceType,
      "kubernetes.io/os": requirement("kubernetes.io/os").values[0],
      "kubernetes.io/arch": requirement("kubernetes.io/arch").values[0],
      "karpenter.sh/capacity-type": requirement("karpenter.sh/capacity-type").values[0],
      "karpenter.sh/nodepool": p.rec.one("kubernetes:karpenter.sh/v1:NodePool").inputs.metadata.name,
    },
    taints: pool.spec.taints,
  };
}

/** Every DaemonSet the graph installs, by installer; fails on an installer nobody has modelled. */
function graphDaemonSets(p: ProgramRun): { installer: RecordedResource; daemonSets: ModelDaemonSet[] }[] {
  const installers = p.rec.resources.filter((r) => ["aws:eks/addon:Addon", "kubernetes:helm.sh/v3:Release", "kubernetes:apps/v1:DaemonSet"].includes(r.type));
  return installers.map((installer) => {
    const daemonSets = daemonSetsOf(installer);
    assert.ok(daemonSets, `${installer.type} ${installer.name} (${installer.inputs.addonName ?? installer.inputs.chart ?? ""}): vendor its DaemonSets and model them in test/support/gpuNodeDaemonSets.ts`);
    return { installer, daemonSets };
  });
}

/** The ComfyUI pod the Deployment creates (containers, native sidecars and init containers counted as the scheduler does). */
function comfyPod(p: ProgramRun): { cpuMilli: number; memoryMiB: number; gpus: number; tolerations: { key?: string; operator?: string; effect?: string }[]; nodeSelector: Record<string, string> } {
  const spec = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!.inputs.spec.template.spec;
  const inits = spec.initContainers ?? [];
  // Native sidecars (restartPolicy Always) run beside the containers: their requests add up with them.
  const sidecars = inits.filter((c: { restartPolicy?: string }) => c.restartPolicy === "Always");
  const plainInits = inits.filter((c: { restartPolicy?: string }) => c.restartPolicy !== "Always");
  const r = podRequests([...spec.containers, ...sidecars].map((c: { resources?: { requests?: object } }) => c.resources?.requests ?? {}), plainInits.map((c: { resources?: { requests?: object } }) => c.resources?.requests ?? {}));
  const gpus = spec.containers.reduce((n: number, c: { resources?: { requests?: Record<string, string> } }) => n + Number(c.resources?.requests?.["nvidia.com/gpu"] ?? 0), 0);
  return { ...r, gpus, tolerations: spec.tolerations ?? [], nodeSelector: spec.nodeSelector ?? {} };
}

function onNode(p: ProgramRun, node: GpuNode) {
  const all = graphDaemonSets(p).flatMap(({ daemonSets }) => daemonSets);
  const landing = all.filter((d) => landsOn(d, node));
  const perDs = landing.map((d) => ({ name: d.name, ...podRequests(d.containers, d.initContainers) }));
  const total = perDs.reduce((t, d) => ({ cpuMilli: t.cpuMilli + d.cpuMilli, memoryMiB: t.memoryMiB + d.memoryMiB }), { cpuMilli: 0, memoryMiB: 0 });
  return { all, landing, perDs, total };
}

describe("GPU pods fit their node next to every DaemonSet there (program graph)", function () {
  this.timeout(120_000);
  let xlargeOnly: ProgramRun;
  let dev: ProgramRun;
  before(async () => {
    dev = await runProgram();
    xlargeOnly = await runProgramWith({ "comfyui-eks:gpuInstanceTypes": JSON.stringify(["g6.xlarge"]) });
  });

  it("a g6.xlarge-only stack: the ComfyUI pod plus every DaemonSet on the GPU node fits the node's allocatable", () => {
    const pool = xlargeOnly.rec.one("kubernetes:karpenter.sh/v1:NodePool").inputs.spec.template.spec;
    assert.deepEqual(pool.requirements.find((r: { key: string }) => r.key === "node.kubernetes.io/instance-type").values, ["g6.xlarge"]);
    const node = gpuNode(xlargeOnly, "g6.xlarge");
    const pod = comfyPod(xlargeOnly);
    // The pod itself may go there: it tolerates the GPU taint and selects the pool.
    assert.ok(landsOn({ name: "comfyui", source: "", containers: [], initContainers: [], tolerations: pod.tolerations, nodeSelector: pod.nodeSelector, nodeSelectorTerms: [] }, node));
    const { perDs, total } = onNode(xlargeOnly, node);
    const a = karpenterAllocatable("g6.xlarge");
    const detail = `pod ${pod.cpuMilli}m/${pod.memoryMiB}Mi + DaemonSets ${total.cpuMilli}m/${total.memoryMiB}Mi (${perDs.map((d) => `${d.name} ${d.cpuMilli}m/${d.memoryMiB}Mi`).join(", ")}) vs allocatable ${a.cpuMilli}m/${a.memoryMiB}Mi`;
    assert.equal(pod.gpus, 1);
    assert.ok(pod.cpuMilli + total.cpuMilli <= a.cpuMilli, `CPU: ${detail}`);
    assert.ok(pod.memoryMiB + total.memoryMiB <= a.memoryMiB, `memory: ${detail}`);
    // ComfyUI still gets most of the node: at least 3 of its 4 vCPUs and 12 GiB of its 16.
    assert.ok(pod.cpuMilli >= 3000 && pod.memoryMiB >= 12 * 1024, detail);
  });

  it("finds the CloudWatch add-on's agent, dcgm-exporter and Fluent Bit, and the EKS add-ons' node DaemonSets, on the GPU node; not the Windows, Neuron or MPS ones", () => {
    const { all, landing } = onNode(xlargeOnly, gpuNode(xlargeOnly, "g6.xlarge"));
    const names = landing.map((d) => d.name).sort();
    for (const n of ["amazon-cloudwatch/cloudwatch-agent", "amazon-cloudwatch/dcgm-exporter", "amazon-cloudwatch/fluent-bit", "kube-system/aws-node", "kube-system/kube-proxy", "kube-system/eks-pod-identity-agent", "kube-system/s3-csi-node", "kube-system/nvidia-device-plugin"]) {
      assert.ok(names.includes(n), `${n} runs on GPU nodes (found: ${names.join(", ")})`);
    }
    for (const n of ["amazon-cloudwatch/neuron-monitor", "amazon-cloudwatch/cloudwatch-agent-windows", "amazon-cloudwatch/fluent-bit-windows", "kube-system/nvidia-device-plugin-mps-control-daemon"]) {
      assert.ok(all.some((d) => d.name === n), `${n} is modelled`);
      assert.ok(!names.includes(n), `${n} does not run on a g6.xlarge GPU node`);
    }
  });

  it("karpenter/nodeDaemonSets.ts lists exactly those DaemonSets with exactly their requests", () => {
    for (const p of [xlargeOnly, dev]) {
      const types: string[] = p.rec.one("kubernetes:karpenter.sh/v1:NodePool").inputs.spec.template.spec.requirements.find((r: { key: string }) => r.key === "node.kubernetes.io/instance-type").values;
      for (const t of types) {
        const derived = onNode(p, gpuNode(p, t)).perDs.map((d) => [d.name, d.cpuMilli, d.memoryMiB]).sort();
        const listed = GPU_NODE_DAEMONSETS.map((d) => [d.name, d.cpuMilli, d.memoryMiB]).sort();
        assert.deepEqual(listed, derived, `${t}: the program's list of DaemonSets on GPU nodes`);
      }
    }
    assert.deepEqual(gpuNodeDaemonSetRequests(), { cpuMilli: 780, memoryMiB: 529 });
  });

  it("the dev stack (xlarge and 2xlarge types): one pod fits every configured type GPU-count times, next to its DaemonSets", () => {
    const pod = comfyPod(dev);
    const types: string[] = dev.rec.one("kubernetes:karpenter.sh/v1:NodePool").inputs.spec.template.spec.requirements.find((r: { key: string }) => r.key === "node.kubernetes.io/instance-type").values;
    assert.ok(types.length >= 2);
    for (const t of types) {
      const { total } = onNode(dev, gpuNode(dev, t));
      const a = karpenterAllocatable(t);
      const fit = Math.min(Math.floor((a.cpuMilli - total.cpuMilli) / pod.cpuMilli), Math.floor((a.memoryMiB - total.memoryMiB) / pod.memoryMiB));
      assert.ok(fit >= a.gpus, `${t}: ${fit} pod(s) of ${pod.cpuMilli}m/${pod.memoryMiB}Mi fit next to ${total.cpuMilli}m/${total.memoryMiB}Mi of DaemonSets, ${a.gpus} GPU(s)`);
    }
  });

  it("the model catches a DaemonSet that does not fit (the check is not a no-op)", () => {
    const node = gpuNode(xlargeOnly, "g6.xlarge");
    const tooBig: ModelDaemonSet = { name: "x/y", source: "", containers: [{ cpu: "1", memory: "3Gi" }], initContainers: [{ cpu: "2" }], tolerations: [{ operator: "Exists" }], nodeSelector: {}, nodeSelectorTerms: [] };
    assert.ok(landsOn(tooBig, node));
    assert.deepEqual(podRequests(tooBig.containers, tooBig.initContainers), { cpuMilli: 2000, memoryMiB: 3072 });
    assert.ok(!landsOn({ ...tooBig, tolerations: [{ key: "CriticalAddonsOnly", operator: "Exists" }] }, node), "the GPU taint keeps out what does not tolerate it");
    assert.ok(!landsOn({ ...tooBig, nodeSelectorTerms: [{ matchExpressions: [{ key: "node.kubernetes.io/instance-type", operator: "In", values: ["inf2.xlarge"] }] }] }, node));
  });
});
