import { strict as assert } from "node:assert";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DockerfileParser } from "dockerfile-ast";
import { parseConfig } from "../../config";
import { ECR_LIFECYCLE_POLICY } from "../../image";
import { IMAGES } from "../../versions";

const dir = path.join(__dirname, "..", "..", "image");
const text = fs.readFileSync(path.join(dir, "Dockerfile"), "utf8");
const df = DockerfileParser.parse(text);
const instructions = df.getInstructions();
const args = (kw: string) => instructions.filter((i) => i.getKeyword() === kw).map((i) => i.getArgumentsContent() ?? "");

/**
 * Every image a build pulls comes from ECR Public: an unqualified name (ubuntu:24.04), docker.io or a
 * `# syntax=` frontend would be an anonymous Docker Hub pull from CodeBuild's shared addresses.
 */
function dockerHubPulls(file: string): string[] {
  const source = fs.readFileSync(file, "utf8");
  const parsed = DockerfileParser.parse(source);
  const stages = new Set(parsed.getFROMs().map((f) => f.getBuildStage()?.toLowerCase()).filter(Boolean));
  const problems: string[] = [];
  for (const f of parsed.getFROMs()) {
    const ref = f.getImage() ?? "";
    if (stages.has(ref.toLowerCase())) continue;
    if (!ref.startsWith("public.ecr.aws/")) problems.push(`FROM ${ref}`);
  }
  // COPY --from=<image> pulls too.
  for (const line of source.split("\n")) {
    const from = /^\s*COPY\s.*--from=(\S+)/i.exec(line)?.[1];
    if (from && !stages.has(from.toLowerCase()) && !/^\d+$/.test(from) && !from.startsWith("public.ecr.aws/")) problems.push(`COPY --from=${from}`);
  }
  for (const d of parsed.getDirectives()) if (d.getName()?.toLowerCase() === "syntax") problems.push(`# syntax=${d.getValue()}`);
  return problems;
}

const DOCKERFILES = ["image/Dockerfile", "workload/gateway/Dockerfile", "workload/models/Dockerfile"];

/** The base images a Dockerfile starts its stages from (not its own earlier stages). */
function baseImages(rel: string): string[] {
  const parsed = DockerfileParser.parse(fs.readFileSync(path.join(__dirname, "..", "..", rel), "utf8"));
  const stages = new Set(parsed.getFROMs().map((f) => f.getBuildStage()?.toLowerCase()).filter(Boolean));
  return parsed.getFROMs().map((f) => f.getImage() ?? "").filter((ref) => !stages.has(ref.toLowerCase()));
}

describe("base images: ECR Public only, never Docker Hub", () => {
  for (const rel of DOCKERFILES) {
    it(`${rel} pulls every image from public.ecr.aws`, () => {
      assert.deepEqual(dockerHubPulls(path.join(__dirname, "..", "..", rel)), []);
    });
  }

  it("every Dockerfile starts from an image pinned in versions.ts, and every pinned base image is used", () => {
    const pinned = [IMAGES.node, IMAGES.ubuntu] as string[];
    const used = DOCKERFILES.flatMap((rel) => baseImages(rel).map((ref) => ({ rel, ref })));
    assert.deepEqual(used.filter((u) => !pinned.includes(u.ref)), [], "a FROM line that is not IMAGES.node or IMAGES.ubuntu");
    for (const p of pinned) assert.ok(used.some((u) => u.ref === p), `${p} is pinned but no Dockerfile uses it`);
  });

  it("the check finds a Docker Hub pull (the check is not a no-op)", () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dockerfile-"));
    try {
      const file = path.join(tmp, "Dockerfile");
      fs.writeFileSync(file, "# syntax=docker/dockerfile:1\nFROM ubuntu:24.04 AS a\nFROM public.ecr.aws/docker/library/ubuntu:24.04\nCOPY --from=a /x /x\nCOPY --from=busybox:1 /bin/sh /sh\n");
      assert.deepEqual(dockerHubPulls(file), ["FROM ubuntu:24.04", "COPY --from=busybox:1", "# syntax=docker/dockerfile:1"]);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe("image/Dockerfile", () => {
  it("runs on a plain Ubuntu release with no second CUDA/cuDNN stack (torch's wheels bring theirs)", () => {
    const from = df.getFROMs();
    assert.equal(from.length, 2, "a source stage and the runtime");
    for (const f of from) {
      assert.equal(`${f.getRegistry()}/${f.getImageName()}`, "public.ecr.aws/docker/library/ubuntu");
      assert.match(f.getImageTag() ?? "", /^\d{2}\.\d{2}$/, "an exact Ubuntu release");
    }
    // Neither a CUDA base image nor CUDA/cuDNN system packages anywhere.
    assert.doesNotMatch(text, /^FROM\s+nvidia\/cuda/im);
    assert.doesNotMatch(text, /apt-get install[^\n]*(cuda|cudnn|libnccl|libcublas)/i);
    // The runtime asks the NVIDIA container runtime for the driver's compute libraries.
    assert.match(text, /NVIDIA_DRIVER_CAPABILITIES=compute,utility/);
  });

  it("keeps git and ffmpeg/libGL out of the runtime stage", () => {
    const runtime = text.slice(text.lastIndexOf("\nFROM "));
    assert.doesNotMatch(runtime, /apt-get install[^\n]*\bgit\b/);
    assert.doesNotMatch(runtime, /\b(ffmpeg|libgl1)\b/);
    assert.match(runtime, /COPY --from=source \/app\/ComfyUI \/app\/ComfyUI/);
  });

  it("installs the Python stack in separate layers, torch's CUDA wheels before torch, largest first", () => {
    const runs = args("RUN");
    const layerOf = (pkg: string) =>
      runs.findIndex((r) => {
        if (!r.includes("pip install") || r.includes("--dry-run")) return false;
        const pinned = /torch-pins ([^)]*)\)/.exec(r)?.[1].split(/\s+/) ?? [];
        return pinned.includes(pkg) || r.split(/\s+/).includes(pkg);
      });
    const order = ["nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-nccl-cu12", "nvidia-cusparse-cu12", "nvidia-cufft-cu12", "torch"].map(layerOf);
    for (const [i, l] of order.entries()) assert.ok(l >= 0, `no layer installs ${["cudnn", "cublas", "nccl", "cusparse", "cufft", "torch"][i]}`);
    assert.equal(new Set(order).size, order.length, "each group in its own RUN layer");
    assert.deepEqual([...order].sort((a, b) => a - b), order, "largest (CUDA libraries) first, torch after them");
    // Each CUDA layer installs exactly its wheels, at torch's own pins.
    for (const l of order.slice(0, -1)) {
      assert.match(runs[l], /^p="\$\(torch-pins [^)]+\)" && pip install --no-deps /, runs[l]);
    }
    assert.match(runs[order[order.length - 1]], /-c \/build\/torch-pins\.txt torch torchvision torchaudio$/);
    const comfyReq = runs.findIndex((r) => r.includes("-r /app/ComfyUI/requirements.txt"));
    assert.ok(comfyReq > order[order.length - 1], "ComfyUI's requirements after torch");
    // The pins come from torch's own resolution (pip's report), not from a copied list.
    assert.ok(runs.some((r) => /pip install --dry-run --ignore-installed --quiet -c \/build\/constraints\.txt --report \/build\/torch-report\.json/.test(r) && r.includes("> /build/torch-pins.txt")));
  });

  it("torch-pins prints torch's own pins and refuses a name torch does not require", () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pins-"));
    try {
      const pins = path.join(tmp, "pins.txt");
      fs.writeFileSync(pins, "torch==2.8.0\nnvidia-cudnn-cu12==9.10.2.21\nnvidia-cublas-cu12==12.8.4.1\n");
      const env = { ...process.env, TORCH_PINS: pins };
      const script = path.join(dir, "torch-pins.sh");
      assert.equal(execFileSync(script, ["nvidia-cudnn-cu12", "NVIDIA-CUBLAS-CU12"], { env }).toString(), "nvidia-cudnn-cu12==9.10.2.21\nnvidia-cublas-cu12==12.8.4.1\n");
      const missing = spawnSync(script, ["nvidia-cudnn-cu12", "nvidia-nccl-cu12"], { env });
      assert.notEqual(missing.status, 0);
      assert.match(missing.stderr.toString(), /torch does not require nvidia-nccl-cu12/);
      // A prefix is not a match: "nvidia-cu" must not pick nvidia-cudnn.
      assert.notEqual(spawnSync(script, ["nvidia-cu"], { env }).status, 0);
      assert.notEqual(spawnSync(script, [], { env }).status, 0);
      assert.notEqual(spawnSync(script, ["torch"], { env: { ...process.env, TORCH_PINS: path.join(tmp, "absent") } }).status, 0);
      execFileSync("shellcheck", [script]);
      assert.ok(text.includes("COPY --chmod=755 torch-pins.sh /usr/local/bin/torch-pins"));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("runs as a non-root user", () => {
    const users = args("USER");
    assert.ok(users.length > 0);
    assert.doesNotMatch(users[users.length - 1], /^(root|0)(:|$)/);
  });

  it("starts ComfyUI on 0.0.0.0:8848", () => {
    const entry = JSON.parse(args("ENTRYPOINT")[0]);
    assert.deepEqual(entry.slice(0, 2), ["python3", "main.py"]);
    assert.equal(entry[entry.indexOf("--listen") + 1], "0.0.0.0");
    assert.equal(entry[entry.indexOf("--port") + 1], "8848");
    assert.deepEqual(args("EXPOSE"), ["8848"]);
  });

  it("has ComfyUI gzip its JSON itself (CloudFront compresses nothing it does not cache)", () => {
    const entry: string[] = JSON.parse(args("ENTRYPOINT")[0]);
    assert.ok(entry.includes("--enable-compress-response-body"), entry.join(" "));
  });

  it("checks out ComfyUI by the configured tag and fails unless it is the configured commit", () => {
    assert.deepEqual(args("ARG").filter((a) => a.startsWith("COMFYUI_V") || a.startsWith("COMFYUI_C")), ["COMFYUI_VERSION", "COMFYUI_COMMIT"]);
    assert.match(text, /--branch "\$COMFYUI_VERSION"/);
    assert.match(text, /test "\$\(git -C \/app\/ComfyUI rev-parse HEAD\)" = "\$COMFYUI_COMMIT"/);
    // The check runs in the same RUN as the clone, so a mismatch fails the build.
    const clone = args("RUN").find((r) => r.includes("git clone --depth 1 --branch"))!;
    assert.match(clone, /--branch "\$COMFYUI_VERSION"[\s\S]*&& test "\$\(git -C \/app\/ComfyUI rev-parse HEAD\)" = "\$COMFYUI_COMMIT"/);
    // The default the image is built with: v0.3.64 at a125cd8, the version docs/comfyui-protocol.md describes.
    const cfg = parseConfig({ "aws:region": "us-west-2" }, { project: "p", stack: "dev" });
    assert.equal(cfg.comfyuiVersion, "v0.3.64");
    assert.equal(cfg.comfyuiCommit, "a125cd84b054a57729b5eecab930ca9408719832");
  });

  it("pins Python dependencies and installs them through the constraints", () => {
    const lines = fs.readFileSync(path.join(dir, "constraints.txt"), "utf8").split("\n").filter((l) => l.trim() && !l.startsWith("#"));
    assert.ok(lines.length >= 10);
    for (const l of lines) assert.match(l, /^[A-Za-z0-9_.-]+==\d[\w.]*$/, l);
    for (const pkg of ["torch", "torchvision", "torchaudio"]) assert.ok(lines.some((l) => l.startsWith(`${pkg}==`)), pkg);
    const pipInstalls = text.match(/pip install[^\n&]*/g) ?? [];
    assert.ok(pipInstalls.length >= 3);
    for (const p of pipInstalls) assert.match(p, /-c \/build\/constraints\.txt/, p);
  });

  it("accepts only pinned custom nodes (<url> <40-hex commit>)", () => {
    const lines = fs.readFileSync(path.join(dir, "custom-nodes.txt"), "utf8").split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
    for (const l of lines) assert.match(l, /^https:\/\/\S+\.git [0-9a-f]{40}$/, l);
    assert.match(text, /git -C "\$dir" checkout --detach "\$commit"/);
  });

  it("creates the folders the workload mounts", () => {
    for (const f of ["models", "output", "input", "temp", "user"]) assert.ok(text.includes(`/app/ComfyUI/${f}`), f);
  });

  it("has an ECR lifecycle that expires untagged images and caps the count", () => {
    const rules = JSON.parse(ECR_LIFECYCLE_POLICY).rules;
    assert.equal(rules[0].selection.tagStatus, "untagged");
    assert.equal(rules[1].selection.countType, "imageCountMoreThan");
  });
});
