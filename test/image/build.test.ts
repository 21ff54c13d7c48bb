/**
 * Build-and-wait against mocked SDK v3 clients (aws-sdk-client-mock): success (digest from the
 * build's exported variables), failure (phase + log tail + link) and timeout; the provider's diff,
 * check and refresh; its serialized form works on its own.
 */
import { strict as assert } from "node:assert";
import * as vm from "node:vm";
import * as pulumi from "@pulumi/pulumi";
import { mockClient } from "aws-sdk-client-mock";
import { BatchGetBuildsCommand, CodeBuildClient, StartBuildCommand, StopBuildCommand, type Build } from "@aws-sdk/client-codebuild";
import { CloudWatchLogsClient, GetLogEventsCommand } from "@aws-sdk/client-cloudwatch-logs";
import { BuildRequest, WaitOptions, buildAndWait } from "../../image/build";
import { ImageBuildInputs, ImageBuildOutputs, awsBuildClients, changedInputs, checkInputs, imageBuildProvider } from "../../image/provider";
import { encodeBuildArgs } from "../../image/buildspec";

const REPO = "123456789012.dkr.ecr.us-west-2.amazonaws.com/comfyui";
const DIGEST = "sha256:" + "ab".repeat(32);
const LINK = "https://console.aws.amazon.com/cloudwatch/home?region=us-west-2#logEvent:group=/aws/codebuild/p;stream=s";
const req: BuildRequest = { projectName: "p", sourceLocation: "bucket/contexts/comfyui/x.zip", repositoryUrl: REPO, imageTag: "v0.3.64", dockerfile: "image/Dockerfile", contextDir: "image", buildArgs: encodeBuildArgs({ A: "1" }) };
const logsInfo = { groupName: "/aws/codebuild/p", streamName: "s", deepLink: LINK };

function options(log: string[], clock = { t: 0 }): WaitOptions {
  return { pollMs: 15_000, timeoutMs: 60 * 60_000, logLines: 3, log: (m) => log.push(m), sleep: async (ms) => void (clock.t += ms), now: () => clock.t };
}

describe("image build: start, wait, report", () => {
  // Mocked only while this block runs: mockClient stubs the class for every instance in the
  // process, so created at load time it would capture other files' real clients too.
  const mockCodeBuild = () => mockClient(CodeBuildClient);
  const mockLogs = () => mockClient(CloudWatchLogsClient);
  let cb: ReturnType<typeof mockCodeBuild>;
  let cwl: ReturnType<typeof mockLogs>;
  before(() => {
    cb = mockCodeBuild();
    cwl = mockLogs();
  });
  beforeEach(() => {
    cb.reset();
    cwl.reset();
  });
  after(() => {
    cb.restore();
    cwl.restore();
  });

  it("succeeds with repo@digest from the exported IMAGE_DIGEST, logging each phase with elapsed time", async () => {
    cb.on(StartBuildCommand).resolves({ build: { id: "p:1", buildStatus: "IN_PROGRESS", currentPhase: "SUBMITTED" } });
    cb.on(BatchGetBuildsCommand)
      .resolvesOnce({ builds: [{ id: "p:1", buildStatus: "IN_PROGRESS", currentPhase: "PROVISIONING" }] })
      .resolvesOnce({ builds: [{ id: "p:1", buildStatus: "IN_PROGRESS", currentPhase: "BUILD" }] })
      .resolves({ builds: [{ id: "p:1", buildStatus: "SUCCEEDED", buildComplete: true, currentPhase: "COMPLETED", logs: logsInfo, exportedEnvironmentVariables: [{ name: "IMAGE_DIGEST", value: DIGEST }] }] });
    const log: string[] = [];
    const r = await buildAndWait(req, awsBuildClients("us-west-2"), options(log));
    assert.equal(r.imageUri, `${REPO}@${DIGEST}`);
    assert.equal(r.digest, DIGEST);
    const start = cb.commandCalls(StartBuildCommand)[0].args[0].input;
    assert.equal(start.projectName, "p");
    assert.equal(start.sourceTypeOverride, "S3");
    assert.equal(start.sourceLocationOverride, "bucket/contexts/comfyui/x.zip");
    const env = Object.fromEntries((start.environmentVariablesOverride ?? []).map((e) => [e.name, e.value]));
    assert.deepEqual(env, { IMAGE_REPO: REPO, IMAGE_TAG: "v0.3.64", DOCKERFILE: "image/Dockerfile", CONTEXT_DIR: "image", BUILD_ARGS: req.buildArgs });
    assert.ok(log.some((l) => /PROVISIONING \(0s elapsed\)/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => /BUILD \(15s elapsed\)/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => l.includes(`succeeded in 30s: ${REPO}@${DIGEST}`)), log.join("\n"));
  });

  it("a succeeded build without a valid digest is an error, not a broken image reference", async () => {
    cb.on(StartBuildCommand).resolves({ build: { id: "p:2" } });
    cb.on(BatchGetBuildsCommand).resolves({ builds: [{ id: "p:2", buildStatus: "SUCCEEDED", buildComplete: true, logs: logsInfo, exportedEnvironmentVariables: [{ name: "IMAGE_DIGEST", value: "" }] }] });
    await assert.rejects(buildAndWait(req, awsBuildClients("us-west-2"), options([])), /exported no image digest/);
  });

  it("a failed build fails with its phase, CodeBuild's message, the last log lines and the link", async () => {
    const failed: Build = {
      id: "p:3",
      buildStatus: "FAILED",
      buildComplete: true,
      currentPhase: "COMPLETED",
      logs: logsInfo,
      phases: [
        { phaseType: "SUBMITTED", phaseStatus: "SUCCEEDED" },
        { phaseType: "PRE_BUILD", phaseStatus: "SUCCEEDED" },
        { phaseType: "BUILD", phaseStatus: "FAILED", contexts: [{ statusCode: "COMMAND_EXECUTION_ERROR", message: "Error while executing command: (...). Reason: exit status 1" }] },
        { phaseType: "POST_BUILD", phaseStatus: "SUCCEEDED" },
      ],
    };
    cb.on(StartBuildCommand).resolves({ build: { id: "p:3" } });
    cb.on(BatchGetBuildsCommand).resolves({ builds: [failed] });
    cwl.on(GetLogEventsCommand, { logGroupName: "/aws/codebuild/p", logStreamName: "s" }).resolves({ events: [{ message: "#12 ERROR: commit mismatch\n" }, { message: "Phase complete: BUILD State: FAILED\n" }] });
    const err = await buildAndWait(req, awsBuildClients("us-west-2"), options([])).then(() => undefined, (e: Error) => e);
    assert.ok(err, "the build must fail");
    assert.match(err.message, /image build p:3 failed \(FAILED\) in phase BUILD \(FAILED\): COMMAND_EXECUTION_ERROR: Error while executing command/);
    assert.match(err.message, /last 2 log lines:\n  #12 ERROR: commit mismatch\n  Phase complete: BUILD State: FAILED/);
    assert.ok(err.message.endsWith(`full log: ${LINK}`));
    // A failure in the build's own commands is not retried.
    assert.equal(cb.commandCalls(StartBuildCommand).length, 1);
    const q = cwl.commandCalls(GetLogEventsCommand)[0].args[0].input;
    assert.equal(q.startFromHead, false);
    assert.equal(q.limit, 3);
  });

  it("starts again when CodeBuild could not yet use the role (IAM propagation), up to the retry limit", async () => {
    const refused = (id: string): Build => ({
      id,
      buildStatus: "FAILED",
      buildComplete: true,
      logs: logsInfo,
      phases: [
        { phaseType: "SUBMITTED", phaseStatus: "SUCCEEDED" },
        { phaseType: "DOWNLOAD_SOURCE", phaseStatus: "FAILED", contexts: [{ statusCode: "ACCESS_DENIED", message: "Access Denied" }] },
      ],
    });
    cb.on(StartBuildCommand).resolvesOnce({ build: { id: "p:6" } }).resolves({ build: { id: "p:7" } });
    cb.on(BatchGetBuildsCommand, { ids: ["p:6"] }).resolves({ builds: [refused("p:6")] });
    cb.on(BatchGetBuildsCommand, { ids: ["p:7"] }).resolves({ builds: [{ id: "p:7", buildStatus: "SUCCEEDED", buildComplete: true, logs: logsInfo, exportedEnvironmentVariables: [{ name: "IMAGE_DIGEST", value: DIGEST }] }] });
    cwl.on(GetLogEventsCommand).resolves({ events: [] });
    const log: string[] = [];
    const r = await buildAndWait(req, awsBuildClients("us-west-2"), options(log));
    assert.equal(r.buildId, "p:7");
    assert.equal(cb.commandCalls(StartBuildCommand).length, 2);
    assert.ok(log.some((l) => /p:6 was refused in DOWNLOAD_SOURCE \(ACCESS_DENIED: Access Denied\); IAM may still be propagating/.test(l)), log.join("\n"));

    cb.reset();
    cb.on(StartBuildCommand).resolves({ build: { id: "p:8" } });
    cb.on(BatchGetBuildsCommand).resolves({ builds: [refused("p:8")] });
    await assert.rejects(buildAndWait(req, awsBuildClients("us-west-2"), { ...options([]), accessRetries: 2 }), /p:8 failed \(FAILED\) in phase DOWNLOAD_SOURCE \(FAILED\): ACCESS_DENIED: Access Denied/);
    assert.equal(cb.commandCalls(StartBuildCommand).length, 3, "one try and two retries");
  });

  it("a hung build is stopped at the deadline and fails with its current phase and link", async () => {
    cb.on(StartBuildCommand).resolves({ build: { id: "p:4" } });
    cb.on(BatchGetBuildsCommand).resolves({ builds: [{ id: "p:4", buildStatus: "IN_PROGRESS", currentPhase: "QUEUED", logs: logsInfo, phases: [{ phaseType: "SUBMITTED", phaseStatus: "SUCCEEDED" }, { phaseType: "QUEUED" }] }] });
    cb.on(StopBuildCommand).resolves({});
    cwl.on(GetLogEventsCommand).resolves({ events: [] });
    const clock = { t: 0 };
    const opts = { ...options([], clock), timeoutMs: 60_000 };
    await assert.rejects(buildAndWait(req, awsBuildClients("us-west-2"), opts), (e: Error) => {
      assert.match(e.message, /image build p:4 timed out after 1m00s \(stopped\) in phase QUEUED/);
      assert.match(e.message, /\(no log lines available\)/);
      assert.ok(e.message.includes(LINK));
      return true;
    });
    assert.equal(cb.commandCalls(StopBuildCommand)[0].args[0].input.id, "p:4");
  });

  it("CodeBuild's own timeout is reported as such", async () => {
    cb.on(StartBuildCommand).resolves({ build: { id: "p:5" } });
    cb.on(BatchGetBuildsCommand).resolves({ builds: [{ id: "p:5", buildStatus: "TIMED_OUT", buildComplete: true, logs: logsInfo, phases: [{ phaseType: "BUILD", phaseStatus: "TIMED_OUT" }] }] });
    cwl.on(GetLogEventsCommand).rejects(new Error("ResourceNotFoundException"));
    await assert.rejects(buildAndWait(req, awsBuildClients("us-west-2"), options([])), /timed out \(CodeBuild's project timeout\) in phase BUILD \(TIMED_OUT\)[\s\S]*could not read the log: ResourceNotFoundException/);
  });
});

describe("ImageBuild provider", () => {
  const base: ImageBuildInputs = {
    region: "us-west-2",
    projectName: "comfyui-eks-dev-image-build",
    sourceLocation: "ctx-bucket/contexts/comfyui/" + "0".repeat(64) + ".zip",
    contextHash: "0".repeat(64),
    repositoryUrl: REPO,
    imageTag: "v0.3.64",
    dockerfile: "image/Dockerfile",
    contextDir: "image",
    buildArgs: encodeBuildArgs({ COMFYUI_VERSION: "v0.3.64", COMFYUI_COMMIT: "a".repeat(40) }),
    timeoutMinutes: 90,
  };
  const recorded: ImageBuildOutputs = { ...base, imageUri: `${REPO}@${DIGEST}`, digest: DIGEST, buildId: "p:1" };

  it("no change, no build; each changed input is named (build args decoded)", async () => {
    assert.deepEqual(await imageBuildProvider.diff!("p:1", recorded, { ...base }), { changes: false, replaces: [], deleteBeforeReplace: false });
    const news = { ...base, contextHash: "1".repeat(64), buildArgs: encodeBuildArgs({ COMFYUI_VERSION: "v0.3.65", COMFYUI_COMMIT: "a".repeat(40) }) };
    const d = await imageBuildProvider.diff!("p:1", recorded, news);
    assert.equal(d.changes, true);
    assert.deepEqual(d.replaces, []);
    const changed = changedInputs(recorded, news);
    assert.equal(changed.length, 2);
    assert.match(changed[0], /^contextHash: 0{64} -> 1{64}$/);
    assert.match(changed[1], /^buildArgs: .*COMFYUI_VERSION=v0\.3\.64 -> .*COMFYUI_VERSION=v0\.3\.65$/);
    assert.deepEqual(changedInputs(recorded, { ...base, projectName: "other" }), ["projectName: comfyui-eks-dev-image-build -> other"]);
  });

  it("refresh returns the recorded state unchanged", async () => {
    assert.deepEqual(await imageBuildProvider.read!("p:1", recorded), { id: "p:1", props: recorded });
  });

  it("a timeout-only update keeps the image without building", async () => {
    const r = await imageBuildProvider.update!("p:1", recorded, { ...base, timeoutMinutes: 120 });
    assert.equal(r.outs!.imageUri, recorded.imageUri);
    assert.equal(r.outs!.timeoutMinutes, 120);
  });

  it("check names each bad input", () => {
    assert.deepEqual(checkInputs(base), []);
    const bad = checkInputs({ ...base, repositoryUrl: `${REPO}:latest`, contextHash: "xyz", timeoutMinutes: 1, sourceLocation: "nobucket" });
    assert.deepEqual(bad.map((f) => f.property).sort(), ["contextHash", "repositoryUrl", "sourceLocation", "timeoutMinutes"]);
    assert.match(bad.find((f) => f.property === "repositoryUrl")!.reason, /without tag/);
  });

  it("serializes into a self-contained module whose methods still work", async () => {
    const sf = await pulumi.runtime.serializeFunction(() => imageBuildProvider);
    const mod = { exports: {} as Record<string, any> };
    // Only require is handed in: everything else must travel in the serialized text.
    vm.runInNewContext(sf.text, { exports: mod.exports, module: mod, require, Buffer, console, process, setTimeout });
    const provider = mod.exports[sf.exportName]();
    const d = await provider.diff("p:1", recorded, { ...base, contextHash: "2".repeat(64) });
    assert.equal(d.changes, true);
    const c = await provider.check({}, { ...base, imageTag: "bad tag" });
    assert.equal(JSON.stringify(c.failures.map((f: any) => f.property)), JSON.stringify(["imageTag"]));
    // The AWS SDK is required inside methods, not captured as an object graph.
    assert.match(sf.text, /require\("@aws-sdk\/client-codebuild"\)/);
  });
});
