/**
 * Every pin lives in versions.ts (issue 20): the graph's Helm releases and pinned add-ons use its
 * entries, every entry is used, and no other source file spells a chart, add-on or base-image pin.
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { ADDONS, CHARTS } from "../../versions";
import { ProgramRun, ROOT, runProgram } from "../support/program";
import { sourceFiles } from "../support/sources";

/** What a pin looks like in TypeScript source: a chart reference, an add-on build, a base image. */
const PIN_PATTERNS = [/oci:\/\//, /-eksbuild\.\d/, /public\.ecr\.aws\/docker\/library\//, /amazonlinux-x86_64-standard/, /\bversion:\s*"\d+\.\d+\.\d+"/];

describe("versions.ts holds every pin", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("each Helm release installs a chart and version from CHARTS, and each CHARTS entry is installed", () => {
    const releases = p.rec.ofType("kubernetes:helm.sh/v3:Release").map((r) => ({ name: r.name, chart: r.inputs.chart, version: r.inputs.version, repo: r.inputs.repositoryOpts?.repo }));
    const pins = Object.values(CHARTS).map((c) => ({ chart: c.chart, version: c.version, repo: "repo" in c ? c.repo : undefined }));
    for (const r of releases) {
      assert.ok(pins.some((c) => c.chart === r.chart && c.version === r.version && c.repo === r.repo), `${r.name} installs ${r.chart}@${r.version}, not a CHARTS pin`);
    }
    for (const c of pins) assert.ok(releases.some((r) => r.chart === c.chart), `${c.chart} is pinned but never installed`);
  });

  it("the pinned add-on takes its version from ADDONS", () => {
    const addon = p.rec.ofType("aws:eks/addon:Addon").find((a) => a.inputs.addonName === "aws-mountpoint-s3-csi-driver")!;
    assert.equal(addon.inputs.addonVersion, ADDONS.mountpoint);
  });

  it("no other source file spells a pin", () => {
    const offenders = sourceFiles(/\.ts$/)
      .filter((f) => f !== "versions.ts")
      .flatMap((f) => fs.readFileSync(path.join(ROOT, f), "utf8").split("\n").map((line, i) => ({ f, line, i })))
      .filter(({ line }) => !/^\s*(\*|\/\/)/.test(line) && PIN_PATTERNS.some((re) => re.test(line)))
      .map(({ f, i, line }) => `${f}:${i + 1}: ${line.trim()}`);
    assert.deepEqual(offenders, []);
  });

  it("the scan would see a pin (it is not a no-op)", () => {
    assert.ok(PIN_PATTERNS.some((re) => re.test('  karpenter: { chart: "oci://public.ecr.aws/karpenter/karpenter", version: "1.14.1" },')));
    assert.ok(PIN_PATTERNS.some((re) => re.test(`  mountpoint: "v2.7.0-eksbuild.1",`)));
  });
});
