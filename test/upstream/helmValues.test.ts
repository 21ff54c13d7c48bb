/**
 * Every Helm release of the program sets only values its pinned chart has (test/upstream/charts/, see
 * README.md): a misspelt or moved key is ignored by Helm, so the setting would be lost silently.
 */
import { strict as assert } from "node:assert";
import { ProgramRun, runProgram } from "../support/program";
import { chartName, freeFormReason, loadChartDefaults, valuesProblems } from "./helmValues";

const clone = <T>(v: T): T => structuredClone(v);

describe("Helm values against the charts' vendored values.yaml", function () {
  let p: ProgramRun;
  let releases: { name: string; chart: string; version: string; values: Record<string, unknown> | undefined; inputs: Record<string, any> }[];

  before(async () => {
    p = await runProgram();
    releases = p.rec.ofType("kubernetes:helm.sh/v3:Release").map((r) => ({ name: r.name, chart: r.inputs.chart, version: r.inputs.version, values: r.inputs.values, inputs: r.inputs }));
  });

  it("every release is pinned and has its chart's values.yaml vendored at that version", () => {
    assert.deepEqual(releases.map((r) => `${chartName(r.chart)}-${r.version}`).sort(), [
      "aws-load-balancer-controller-3.5.0",
      "karpenter-1.14.1",
      "karpenter-crd-1.14.1",
      "keda-2.20.2",
      "nvidia-device-plugin-0.20.0",
    ]);
    for (const r of releases) {
      assert.match(r.version ?? "", /^\d+\.\d+\.\d+$/, `${r.name}: chart version must be pinned`);
      assert.ok(loadChartDefaults(r.chart, r.version), r.name);
    }
  });

  it("every values key path the program sets exists in that chart's values.yaml", () => {
    for (const r of releases) {
      // Values from files would bypass this check; the program passes them inline only.
      assert.equal(r.inputs.valueYamlFiles, undefined, `${r.name}: valueYamlFiles are not checked here`);
      const problems = valuesProblems(r.values ?? {}, loadChartDefaults(r.chart, r.version));
      assert.deepEqual(problems, [], `${r.name} (${r.chart} ${r.version}):\n${problems.map((x) => `  ${x.path}: ${x.message}`).join("\n")}`);
    }
  });

  it("a made-up key is flagged with its path, at the top and nested", () => {
    const lbc = releases.find((r) => chartName(r.chart) === "aws-load-balancer-controller")!;
    const bad = { ...clone(lbc.values), serviceAcount: { name: "x" }, serviceAccount: { create: true, nmae: "x" } };
    assert.deepEqual(valuesProblems(bad, loadChartDefaults(lbc.chart, lbc.version)).map((x) => x.path).sort(), ["serviceAccount.nmae", "serviceAcount"]);
    const karpenter = releases.find((r) => chartName(r.chart) === "karpenter")!;
    const k = clone(karpenter.values) as Record<string, any>;
    k.settings.clusterNmae = "typo";
    k.controller.resourcez = {};
    const found = valuesProblems(k, loadChartDefaults(karpenter.chart, karpenter.version));
    assert.deepEqual(found.map((x) => x.path).sort(), ["controller.resourcez", "settings.clusterNmae"]);
    assert.match(found[0].message, /not a key of the chart's values\.yaml/);
  });

  it("a map where the chart has a scalar, or a scalar where it has a map, is flagged", () => {
    const keda = releases.find((r) => r.chart === "keda")!;
    const defaults = loadChartDefaults(keda.chart, keda.version);
    assert.deepEqual(valuesProblems({ operator: { replicaCount: { min: 1 } } }, defaults).map((x) => x.path), ["operator.replicaCount"]);
    assert.deepEqual(valuesProblems({ operator: 2 }, defaults).map((x) => x.path), ["operator"]);
  });

  it("free-form subtrees come from the chart's defaults: {}, null, lists and label maps", () => {
    const karpenter = loadChartDefaults("oci://public.ecr.aws/karpenter/karpenter", "1.14.1") as Record<string, any>;
    // nodeSelector defaults to {kubernetes.io/os: linux}: a label map, so our own label is fine.
    assert.match(freeFormReason(karpenter.nodeSelector)!, /data map/);
    assert.deepEqual(valuesProblems({ nodeSelector: { "comfyui.studio/pool": "system" }, controller: { resources: { requests: { anything: "1" } } }, tolerations: [{ made: "up" }] }, karpenter), []);
    // ...but a map of identifiers is structure: settings' keys are checked.
    assert.equal(freeFormReason(karpenter.settings), undefined);
    const lbc = loadChartDefaults("aws-load-balancer-controller", "3.5.0") as Record<string, any>;
    assert.equal(lbc.clusterName, null);
    assert.deepEqual(valuesProblems({ clusterName: "c", nodeSelector: { a: "b" } }, lbc), []);
  });

  it("a release whose chart version is not vendored is an error, not a pass", () => {
    assert.throws(() => loadChartDefaults("keda", "9.9.9"), /no vendored values\.yaml for chart keda 9\.9\.9/);
  });
});
