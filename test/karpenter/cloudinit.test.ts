/**
 * D6: the GPU user data as a node really gets it — merged by Karpenter (its NodeConfig appended,
 * re-serialised) and processed by cloud-init's own user-data code (Debian's cloud-init 22.4.2
 * modules: UserDataProcessor, then the shell-script part handler writing the script) — must yield
 * our shell script byte for byte, whatever the hot set's keys are.
 */
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { GpuUserDataArgs, renderGpuUserData, renderGpuUserDataScript } from "../../karpenter/userdata/gpuUserData";
import { makeTempDir, removeDir } from "./userdataHelpers";

const execFileAsync = promisify(execFile);
const HARNESS = join(__dirname, "cloudinit_userdata.py");
// Debian's interpreter: its site-packages hold cloudinit (the pyenv python3 first on PATH does not).
const PYTHON = "/usr/bin/python3";

interface Entry {
  readonly contentType: string;
  readonly content: string;
}

/**
 * Karpenter's merge (aws/karpenter-provider-aws v1.14.1 pkg/providers/amifamily/bootstrap/nodeadm.go
 * Script, mime/mime.go NewArchive + Serialize): our parts read with Go's mail + multipart readers
 * (a part's content ends before the line break that precedes the next delimiter), its NodeConfig
 * appended last, all written again under boundary "//" with every CR removed.
 */
export function karpenterMerge(userData: string, nodeConfigYaml: string): string {
  const split = userData.indexOf("\n\n");
  const headers = userData.slice(0, split);
  const boundary = /boundary="([^"]+)"/.exec(headers)?.[1];
  assert.ok(boundary, "our user data is MIME multipart with a boundary");
  const body = userData.slice(split + 2);
  const entries: Entry[] = [];
  const delimiter = `--${boundary}`;
  let at = body.indexOf(`${delimiter}\n`);
  assert.equal(at, 0, "the body starts with the first delimiter");
  for (;;) {
    const partStart = at + delimiter.length + 1;
    const headerEnd = body.indexOf("\n\n", partStart);
    const contentType = /^Content-Type: (.*)$/im.exec(body.slice(partStart, headerEnd))?.[1] ?? "";
    const next = body.indexOf(`\n${delimiter}`, headerEnd + 2);
    assert.ok(next > 0, "every part is followed by a delimiter");
    entries.push({ contentType, content: body.slice(headerEnd + 2, next) });
    at = next + 1;
    if (body.startsWith(`${delimiter}--`, at)) break;
  }
  const all = [...entries, { contentType: "application/node.eks.aws", content: nodeConfigYaml }];
  // Go's multipart.Writer: "--//" then headers, a blank line and the content; "\r\n--//" between
  // parts and "\r\n--//--\r\n" at the end (CRs then removed).
  const parts = all.map((e, i) => `${i === 0 ? "" : "\n"}--//\nContent-Type: ${e.contentType}\n\n${e.content}`);
  return `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="//"\n\n${parts.join("")}\n--//--\n`;
}

/** What Karpenter generates for a RAID0 node class (getNodeConfigYAML), shortened where it does not matter. */
const KARPENTER_NODECONFIG = [
  "# Karpenter Generated NodeConfig",
  "apiVersion: node.eks.aws/v1alpha1",
  "kind: NodeConfig",
  "metadata: {}",
  "spec:",
  "  cluster:",
  "    apiServerEndpoint: https://EXAMPLE.gr7.us-east-1.eks.amazonaws.com",
  "    certificateAuthority: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
  "    cidr: 172.20.0.0/16",
  "    name: comfyui-dev",
  "  instance:",
  "    localStorage:",
  "      strategy: RAID0",
  "  kubelet:",
  "    config:",
  "      maxPods: 58",
  "    flags:",
  "    - --node-labels=karpenter.sh/nodepool=comfyui-gpu,comfyui.studio/pool=gpu",
  "",
].join("\n");

interface CloudInitResult {
  scripts: Record<string, string>;
  errors: string[];
}

describe("GPU user data through Karpenter's merge and cloud-init's user-data processing (D6)", function () {
  this.timeout(60_000);
  let scratch: string;
  let runs = 0;
  before(function () {
    if (!existsSync(PYTHON)) throw new Error(`${PYTHON} (Debian's, with the cloud-init modules) is required`);
    scratch = makeTempDir("cloudinit-test-");
  });
  after(() => removeDir(scratch));

  async function cloudInit(userData: string): Promise<CloudInitResult> {
    const dir = join(scratch, `run-${++runs}`);
    const file = `${dir}.user-data`;
    writeFileSync(file, userData);
    const { stdout } = await execFileAsync(PYTHON, [HARNESS, file, dir], { env: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" } });
    return JSON.parse(stdout) as CloudInitResult;
  }
  const handlerFailures = (r: CloudInitResult): string[] => r.errors.filter((e) => /Failed calling handler/.test(e));

  const ARGS: GpuUserDataArgs = {
    modelsBucket: "comfyui-models-123456789012",
    toolsBucket: "comfyui-nodetools-123456789012",
    region: "us-east-1",
    pins: ["checkpoints/sd_xl_base_1.0.safetensors", "vae/"],
    parallel: 8,
    bootFillSeconds: 600,
    reserveGb: 60,
  };
  const variants: [string, Partial<GpuUserDataArgs>][] = [
    ["ASCII pins", {}],
    ["non-ASCII pins (S3 keys are UTF-8)", { pins: ["checkpoints/モデル_ünïcode.safetensors", "loras/café é.safetensors", "vae/"] }],
    // The EMF jq program is full of $, quotes, braces and pipes.
    ["boot metrics (the EMF jq program in the settings)", { bootMetrics: { logGroupName: "/comfyui/comfyui-dev/metrics", clusterName: "comfyui-dev" } }],
  ];

  for (const [label, variant] of variants) {
    it(`cloud-init writes the shell part byte for byte, for ${label}`, async () => {
      const args = { ...ARGS, ...variant };
      const merged = karpenterMerge(renderGpuUserData(args), KARPENTER_NODECONFIG);
      // Ours first, Karpenter's NodeConfig last.
      assert.ok(merged.indexOf("FastImagePull: true") < merged.indexOf("# Karpenter Generated NodeConfig"));
      const result = await cloudInit(merged);
      assert.deepEqual(handlerFailures(result), []);
      const scripts = Object.values(result.scripts);
      assert.equal(scripts.length, 1, JSON.stringify(result));
      assert.equal(Buffer.from(scripts[0], "hex").toString("latin1"), Buffer.from(renderGpuUserDataScript(args)).toString("latin1"));
    });
  }

  it("the harness catches the defect: a utf-8 shell part with non-ASCII bytes is never written (the old rendering)", async () => {
    const old = renderGpuUserData(ARGS)
      .replace(`text/x-shellscript; charset="us-ascii"`, `text/x-shellscript; charset="utf-8"`)
      .replace("set -Eeuo pipefail\n", "set -Eeuo pipefail\n# loras/café é.safetensors\n");
    const result = await cloudInit(karpenterMerge(old, KARPENTER_NODECONFIG));
    assert.deepEqual(result.scripts, {}, "no script written: no RAID, no models, yet the node would register");
    assert.equal(handlerFailures(result).length, 1, JSON.stringify(result.errors));
  });

  it("the merge helper keeps parts byte for byte (a check of the test's own Karpenter emulation)", () => {
    const ours = renderGpuUserData(ARGS);
    const merged = karpenterMerge(ours, KARPENTER_NODECONFIG);
    assert.ok(merged.includes(`\n--//\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n${renderGpuUserDataScript(ARGS)}\n--//\nContent-Type: application/node.eks.aws\n\n# Karpenter`));
    assert.ok(merged.endsWith(`${KARPENTER_NODECONFIG}\n--//--\n`));
    assert.throws(() => karpenterMerge("MIME-Version: 1.0\nContent-Type: text/plain\n\nhello\n", KARPENTER_NODECONFIG));
  });
});
