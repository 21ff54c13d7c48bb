/**
 * Any GPU instance type, sized from EC2's own data (vendored: test/upstream/ec2/README.md): facts,
 * refusals at preview, per-GPU pod requests that pack k pods on a k-GPU node, prices per region.
 */
import { strict as assert } from "node:assert";
import {
  DAEMONSET_BUDGET,
  GpuTypeFacts,
  PRICE_SNAPSHOT,
  SIDECAR_REQUESTS,
  allocatable,
  factsOf,
  gpuTypeProblem,
  onDemandPrices,
  podResourcesPerGpu,
  resolveGpuTypes,
  vcpusPerGpu,
} from "../../karpenter/gpuTypes";
import { EC2_DATA, instanceTypeInfo, karpenterAllocatable } from "../support/ec2Data";
import { Recorder, installMocks, mockAccount, unwrap } from "../support/mocks";

const GPU_TYPES = Object.keys(EC2_DATA.types).filter((t) => gpuTypeProblem(instanceTypeInfo(t)) === undefined);
const facts = (t: string): GpuTypeFacts => factsOf(instanceTypeInfo(t));
const milli = (cpu: string) => (cpu.endsWith("m") ? Number(cpu.slice(0, -1)) : Number(cpu) * 1000);
const mib = (m: string) => Number(m.replace(/Mi$/, ""));

/** How many ComfyUI pods (container + sidecar) fit a node's allocatable next to the DaemonSets. */
function podsThatFit(type: string, pod: { cpu: string; memory: string }): number {
  const a = karpenterAllocatable(type);
  const cpu = milli(pod.cpu) + SIDECAR_REQUESTS.cpuMilli;
  const mem = mib(pod.memory) + SIDECAR_REQUESTS.memoryMiB;
  return Math.min(a.gpus, Math.floor((a.cpuMilli - DAEMONSET_BUDGET.cpuMilli) / cpu), Math.floor((a.memoryMiB - DAEMONSET_BUDGET.memoryMiB) / mem));
}

describe("GPU instance types from EC2's data", () => {
  it("covers g4dn, g5, g6, g6e in several sizes and a p type", () => {
    for (const family of ["g4dn", "g5", "g6", "g6e", "p5"]) assert.ok(GPU_TYPES.filter((t) => t.startsWith(`${family}.`)).length >= 1, family);
    assert.ok(GPU_TYPES.filter((t) => facts(t).gpus >= 4).length >= 3, "multi-GPU types");
  });

  it("computes each type's allocatable CPU and memory exactly as Karpenter v1.14.1 does", () => {
    for (const t of GPU_TYPES) {
      const ours = allocatable(facts(t));
      const theirs = karpenterAllocatable(t);
      assert.equal(facts(t).maxPods, theirs.pods, `${t} pods`);
      assert.equal(ours.cpuMilli, theirs.cpuMilli, `${t} cpu`);
      assert.equal(ours.memoryMiB, theirs.memoryMiB, `${t} memory`);
    }
  });

  it("refuses a type without an NVIDIA GPU, one without NVMe, naming the type and reason", () => {
    assert.match(gpuTypeProblem(instanceTypeInfo("m5.xlarge"))!, /has no NVIDIA GPU/);
    assert.match(gpuTypeProblem(instanceTypeInfo("g5g.xlarge"))!, /has no NVMe instance store/);
    assert.equal(gpuTypeProblem(instanceTypeInfo("g6e.4xlarge")), undefined);
  });

  it("sizes one GPU's pod so a 4-GPU node runs 4 pods: requests × 4 + DaemonSets ≤ allocatable", () => {
    for (const t of GPU_TYPES.filter((x) => facts(x).gpus === 4)) {
      const pod = podResourcesPerGpu([facts(t)]);
      assert.equal(podsThatFit(t, pod), 4, `${t}: ${pod.cpu} / ${pod.memory}`);
    }
  });

  it("one pod spec fits every configured type k times (mixed 1- and 4-GPU types)", () => {
    const types = ["g6.xlarge", "g6.12xlarge", "g5.2xlarge", "g5.12xlarge"];
    const pod = podResourcesPerGpu(types.map(facts));
    for (const t of types) assert.equal(podsThatFit(t, pod), facts(t).gpus, `${t} with ${pod.cpu} / ${pod.memory}`);
    // g6.xlarge is the tight one: its single GPU gets nearly the whole node.
    assert.ok(milli(pod.cpu) >= 3000 && mib(pod.memory) >= 8192, `${pod.cpu} / ${pod.memory}`);
  });

  it("xlarge and 2xlarge sizes: 3000m/12288Mi on a 4-vCPU 16-GiB type, 7000m/27392Mi on an 8-vCPU 32-GiB one, one pod each", () => {
    for (const [t, cpu, mem] of [["g6.xlarge", "3000m", "12288Mi"], ["g5.xlarge", "3000m", "12288Mi"], ["g6.2xlarge", "7000m", "27392Mi"], ["g5.2xlarge", "7000m", "27392Mi"]] as const) {
      const pod = podResourcesPerGpu([facts(t)]);
      assert.deepEqual(pod, { cpu, memory: mem }, t);
      assert.equal(podsThatFit(t, pod), 1, t);
    }
    // The DaemonSets' requests (nodeDaemonSets.ts) and 1 GiB of memory headroom.
    assert.deepEqual(DAEMONSET_BUDGET, { cpuMilli: 780, memoryMiB: 529 + 1024 });
  });

  it("the sizing check catches a pod that would not fit (the fit test is not a no-op)", () => {
    assert.ok(podsThatFit("g6.12xlarge", { cpu: "13000m", memory: "8192Mi" }) < 4);
  });

  it("g6e.4xlarge gets nearly all of its 16 vCPU and 128 GiB for its one GPU", () => {
    const pod = podResourcesPerGpu([facts("g6e.4xlarge")]);
    assert.equal(podsThatFit("g6e.4xlarge", pod), 1);
    assert.ok(milli(pod.cpu) >= 15000 && mib(pod.memory) >= 110000, `${pod.cpu} / ${pod.memory}`);
  });

  it("quota arithmetic uses vCPUs per GPU (a 4-GPU node's 48 vCPU are 12 per GPU)", () => {
    assert.equal(vcpusPerGpu([facts("g6.12xlarge")]), 12);
    assert.equal(vcpusPerGpu([facts("g6.12xlarge"), facts("g6e.4xlarge")]), 16);
  });
});

describe("GPU instance types at preview (mocked EC2)", () => {
  afterEach(() => mockAccount.notOffered.clear());
  const resolve = async (types: string[]) => {
    installMocks(new Recorder());
    return unwrap(resolveGpuTypes(types, ["us-west-2a", "us-west-2b"], {}));
  };
  const refusal = (types: string[]) =>
    new Promise<string>((resolveMsg) => {
      process.once("unhandledRejection", (e) => resolveMsg((e as Error).message));
      installMocks(new Recorder());
      void unwrap(resolveGpuTypes(types, ["us-west-2a", "us-west-2b"], {}));
    });

  it("reads every configured type's facts from EC2", async () => {
    const got = await resolve(["g6e.4xlarge", "g6.12xlarge"]);
    assert.deepEqual(got.map((f) => [f.instanceType, f.gpus, f.gpuName, f.nvmeGB]), [["g6e.4xlarge", 1, "L40S", 600], ["g6.12xlarge", 4, "L4", 3760]]);
  });

  it("refuses, all at once: no NVIDIA GPU, no NVMe, not offered in the stack's zones, unknown", async () => {
    mockAccount.notOffered.add("g6e.12xlarge");
    const msg = await refusal(["m5.xlarge", "g5g.xlarge", "g6e.12xlarge", "g9.mega", "g6.xlarge"]);
    assert.match(msg, /gpuInstanceTypes: /);
    assert.match(msg, /"m5\.xlarge" has no NVIDIA GPU/);
    assert.match(msg, /"g5g\.xlarge" has no NVMe instance store/);
    assert.match(msg, /"g6e\.12xlarge" is not offered in the stack's availability zones \(us-west-2a, us-west-2b\)/);
    assert.match(msg, /"g9\.mega" is not an EC2 instance type here/);
    assert.doesNotMatch(msg, /"g6\.xlarge"/);
  });

  it("prices each type in the stack's region from the Price List, never another region's", async () => {
    installMocks(new Recorder());
    const east = await unwrap(onDemandPrices(["g5.2xlarge", "g6e.4xlarge"], "us-east-1", undefined, {}));
    assert.deepEqual(east["g5.2xlarge"], { usdPerHour: PRICE_SNAPSHOT.onDemandUsdPerHour["us-east-1"]["g5.2xlarge"], source: "AWS Price List" });
    assert.equal(east["g5.2xlarge"].usdPerHour, 1.212);
    const west = await unwrap(onDemandPrices(["g5.2xlarge"], "us-west-2", undefined, {}));
    assert.equal(west["g5.2xlarge"].usdPerHour, null, "the snapshot is us-east-1's: it must not stand in for us-west-2");
    assert.match(west["g5.2xlarge"].source, /no price known for us-west-2/);
  });
});
