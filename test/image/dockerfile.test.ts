import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { DockerfileParser } from "dockerfile-ast";
import { parseConfig } from "../../config";
import { ECR_LIFECYCLE_POLICY } from "../../image";

const dir = path.join(__dirname, "..", "..", "image");
const text = fs.readFileSync(path.join(dir, "Dockerfile"), "utf8");
const df = DockerfileParser.parse(text);
const instructions = df.getInstructions();
const args = (kw: string) => instructions.filter((i) => i.getKeyword() === kw).map((i) => i.getArgumentsContent() ?? "");

describe("image/Dockerfile", () => {
  it("parses and pins its CUDA runtime base to an exact version", () => {
    const from = df.getFROMs();
    assert.equal(from.length, 1);
    const img = from[0].getImageName();
    const tag = from[0].getImageTag() ?? "";
    assert.equal(img, "nvidia/cuda");
    assert.match(tag, /^\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+$/);
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
