/**
 * The image build's provider uses the stack's AWS settings and stops its build when the update is
 * cancelled (image/awsSettings.ts, image/cancel.ts, image/provider.ts):
 * - the program passes aws:profile and aws:assumeRoles into the build's inputs, never a key;
 * - the credentials: static keys or the profile, then each role assumed with the one before, in
 *   the stack's region (against an STS stand-in on loopback);
 * - cancelled waits stop their build (aws-sdk-client-mock), signals and Pulumi's Cancel RPC reach
 *   the hooks;
 * - end to end: @pulumi/pulumi's own dynamic provider host runs the serialized provider against a
 *   CodeBuild stand-in; the stack's static keys arrive through Configure only, and Pulumi's Cancel
 *   and SIGINT each end in StopBuild.
 */
import { strict as assert } from "node:assert";
import { ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as pulumi from "@pulumi/pulumi";
import { mockClient } from "aws-sdk-client-mock";
import { BatchGetBuildsCommand, CodeBuildClient, StartBuildCommand, StopBuildCommand } from "@aws-sdk/client-codebuild";
import { ResourceProviderClient } from "@pulumi/pulumi/proto/provider_grpc_pb";
import { ConfigureRequest, CreateRequest } from "@pulumi/pulumi/proto/provider_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { ComfyImage } from "../../image";
import { credentialChain, durationSeconds, stackAwsSettings, staticKeysFrom } from "../../image/awsSettings";
import { BuildRequest, buildAndWait } from "../../image/build";
import { encodeBuildArgs } from "../../image/buildspec";
import { CANCEL_RPC_PATH, CancelState, cancelAll, installCancelHooks } from "../../image/cancel";
import { ImageBuildInputs, awsBuildClients, bookkeepingChanged, checkInputs, imageBuildProvider } from "../../image/provider";
import { Recorder, installMocks, quiesce } from "../support/mocks";
import { FakeAws, startFakeAws } from "./fakeAws";

const REPO = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/comfyui";
const ROLE_ONE = "arn:aws:iam::111111111111:role/deployer";
const ROLE_TWO = "arn:aws:iam::222222222222:role/studio-admin";
const config = (values: Record<string, string>) => ({ get: (k: string) => values[k] });

describe("image build provider: the stack's AWS settings", () => {
  describe("in the program graph", () => {
    const SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
    before(() => {
      pulumi.runtime.setAllConfig(
        {
          "aws:profile": "studio",
          "aws:assumeRoles": JSON.stringify([{ roleArn: ROLE_ONE, sessionName: "deploy", externalId: "ext-1", duration: "1h" }, { roleArn: ROLE_TWO }]),
          "aws:accessKey": "AKIASTACKCONFIG",
          "aws:secretKey": SECRET_KEY,
        },
        ["aws:accessKey", "aws:secretKey"],
      );
    });
    after(() => {
      // setAllConfig merges: blank the keys again for the files that run after this one.
      pulumi.runtime.setAllConfig({ "aws:profile": "", "aws:assumeRoles": "", "aws:accessKey": "", "aws:secretKey": "" });
    });

    it("passes aws:profile and aws:assumeRoles into every build's inputs, and no key or secret", async () => {
      const rec = new Recorder();
      installMocks(rec);
      new ComfyImage("awscfg", { comfyuiVersion: "v0.3.64", comfyuiCommit: "a".repeat(40), additionalImages: [{ name: "gateway", context: ["package.json"], dockerfile: "package.json", imageTag: "latest" }], tags: {} });
      await quiesce(rec);
      const builds = rec.ofType("pulumi-nodejs:dynamic/comfyui-image:ImageBuild");
      assert.equal(builds.length, 2);
      for (const b of builds) {
        assert.deepEqual(b.inputs.aws, {
          profile: "studio",
          assumeRoles: [{ roleArn: ROLE_ONE, sessionName: "deploy", externalId: "ext-1", duration: "1h" }, { roleArn: ROLE_TWO }],
        });
        const text = JSON.stringify(b.inputs);
        assert.ok(!text.includes(SECRET_KEY) && !text.includes("AKIASTACKCONFIG"), "static keys never become inputs (they would sit in the state)");
        assert.deepEqual(checkInputs(b.inputs as ImageBuildInputs).filter((f) => f.property === "aws"), []);
      }
    });
  });

  describe("reading and checking the settings", () => {
    it("takes profile and roles, refuses a role without roleArn, an unknown key or a bad duration", () => {
      assert.deepEqual(stackAwsSettings(config({})), {});
      assert.deepEqual(stackAwsSettings(config({ "aws:profile": "p", "aws:assumeRoles": JSON.stringify([{ roleArn: ROLE_ONE }]) })), { profile: "p", assumeRoles: [{ roleArn: ROLE_ONE }] });
      assert.throws(() => stackAwsSettings(config({ "aws:assumeRoles": JSON.stringify([{ sessionName: "x" }]) })), /aws:assumeRoles\[0\] needs a roleArn/);
      assert.throws(() => stackAwsSettings(config({ "aws:assumeRoles": JSON.stringify([{ roleArn: ROLE_ONE, role_arn: "x" }]) })), /unknown key\(s\) role_arn/);
      assert.throws(() => stackAwsSettings(config({ "aws:assumeRoles": JSON.stringify([{ roleArn: ROLE_ONE, duration: "2d" }]) })), /not a duration/);
      assert.equal(durationSeconds("1h30m"), 5400);
      assert.throws(() => durationSeconds("5m"), /between 15m and 12h/);
      assert.deepEqual(staticKeysFrom(config({ "aws:accessKey": "A", "aws:secretKey": "S", "aws:token": "T" })), { accessKeyId: "A", secretAccessKey: "S", sessionToken: "T" });
      assert.equal(staticKeysFrom(config({ "aws:accessKey": "A" })), undefined);
    });

    it("a change of credentials alone is recorded without a build", () => {
      const base = { region: "eu-central-1", timeoutMinutes: 90, aws: {} };
      assert.equal(bookkeepingChanged(base, { ...base, aws: { profile: "p" } }), true);
      assert.equal(bookkeepingChanged({ region: "eu-central-1", timeoutMinutes: 90 }, base), false, "a stack from before the setting: no change");
    });
  });

  describe("the credentials (an STS stand-in on loopback)", () => {
    let fake: FakeAws;
    const saved: Record<string, string | undefined> = {};
    const ENV = ["AWS_ENDPOINT_URL_STS", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];
    let dir: string;
    before(async () => {
      fake = await startFakeAws();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "aws-settings-"));
      fs.writeFileSync(path.join(dir, "credentials"), "[studio]\naws_access_key_id = AKIASTUDIOPROFILE\naws_secret_access_key = s\n\n[default]\naws_access_key_id = AKIADEFAULTPROFILE\naws_secret_access_key = d\n");
      for (const k of ENV) saved[k] = process.env[k];
      for (const k of ENV) delete process.env[k];
      process.env.AWS_ENDPOINT_URL_STS = fake.url;
      process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(dir, "credentials");
      process.env.AWS_CONFIG_FILE = path.join(dir, "absent-config");
    });
    after(async () => {
      for (const k of ENV) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
      fs.rmSync(dir, { recursive: true, force: true });
      await fake.close();
    });
    beforeEach(() => void (fake.calls.length = 0));

    const resolve = async (c: ReturnType<typeof credentialChain>) => (typeof c === "function" ? await c() : c);

    it("the profile, then each role assumed with the credentials before it, in the stack's region", async () => {
      const creds = await resolve(credentialChain("eu-central-1", { profile: "studio", assumeRoles: [{ roleArn: ROLE_ONE, sessionName: "deploy", externalId: "ext-1", duration: "1h" }, { roleArn: ROLE_TWO }] }, undefined));
      assert.equal(creds?.accessKeyId, "ASIA-studio-admin", "the last role's keys sign the build's calls");
      const assumed = fake.calls.filter((c) => c.action === "AssumeRole");
      assert.deepEqual(
        assumed.map((c) => [c.accessKeyId, c.region, c.body.RoleArn, c.body.RoleSessionName, c.body.ExternalId, c.body.DurationSeconds]),
        [
          ["AKIASTUDIOPROFILE", "eu-central-1", ROLE_ONE, "deploy", "ext-1", "3600"],
          ["ASIA-deployer", "eu-central-1", ROLE_TWO, "comfyui-image-build", undefined, undefined],
        ],
      );
    });

    it("the stack's static keys come before the profile; with no setting the SDK's default chain applies", async () => {
      const creds = await resolve(credentialChain("eu-central-1", { profile: "studio", assumeRoles: [{ roleArn: ROLE_ONE }] }, { accessKeyId: "AKIASTATIC", secretAccessKey: "x" }));
      assert.equal(creds?.accessKeyId, "ASIA-deployer");
      assert.equal(fake.calls.find((c) => c.action === "AssumeRole")?.accessKeyId, "AKIASTATIC");
      assert.equal(credentialChain("eu-central-1", {}, undefined), undefined);
      assert.equal((await resolve(credentialChain("eu-central-1", { profile: "studio" }, undefined)))?.accessKeyId, "AKIASTUDIOPROFILE");
    });

    it("the build's clients are built on that chain, in the stack's region", async () => {
      const cb = mockClient(CodeBuildClient);
      try {
        cb.on(StopBuildCommand).resolves({});
        await awsBuildClients("eu-central-1", { profile: "studio", assumeRoles: [{ roleArn: ROLE_TWO }] }).stopBuild("p:1");
        const client = cb.call(0).thisValue as CodeBuildClient;
        assert.equal(await client.config.region(), "eu-central-1");
        assert.equal((await client.config.credentials()).accessKeyId, "ASIA-studio-admin");
        assert.equal(fake.calls.find((c) => c.action === "AssumeRole")?.accessKeyId, "AKIASTUDIOPROFILE");
      } finally {
        cb.restore();
      }
    });
  });
});

describe("image build provider: cancel stops the build", () => {
  const req: BuildRequest = { projectName: "p", sourceLocation: "b/contexts/comfyui/x.zip", repositoryUrl: REPO, imageTag: "v0.3.64", dockerfile: "image/Dockerfile", contextDir: "image", buildArgs: encodeBuildArgs({}) };
  const mockCodeBuild = () => mockClient(CodeBuildClient);
  let cb: ReturnType<typeof mockCodeBuild>;
  before(() => (cb = mockCodeBuild()));
  beforeEach(() => cb.reset());
  after(() => cb.restore());

  const freshState = (): CancelState => ({ running: new Map(), sleepers: new Set(), hooked: false });

  it("a wait that learns of the cancel sends StopBuild, fails saying so and starts nothing again", async () => {
    cb.on(StartBuildCommand).resolves({ build: { id: "p:9" } });
    cb.on(BatchGetBuildsCommand).resolves({ builds: [{ id: "p:9", buildStatus: "IN_PROGRESS", currentPhase: "BUILD" }] });
    cb.on(StopBuildCommand).resolves({});
    const state = freshState();
    let polls = 0;
    const err = await buildAndWait(req, awsBuildClients("eu-central-1"), {
      pollMs: 15_000,
      timeoutMs: 3_600_000,
      logLines: 3,
      log: () => undefined,
      now: () => 0,
      sleep: async () => {
        if (++polls === 2) state.reason = "Pulumi cancelled the update";
      },
      onStarted: (id, stop) => void state.running.set(id, stop),
      onFinished: (id) => void state.running.delete(id),
      cancelled: () => state.reason,
    }).then(
      () => undefined,
      (e: Error) => e,
    );
    assert.match(String(err?.message), /image build p:9 cancelled \(Pulumi cancelled the update\) .*StopBuild sent/);
    assert.deepEqual(cb.commandCalls(StopBuildCommand).map((c) => c.args[0].input.id), ["p:9"]);
    assert.equal(cb.commandCalls(StartBuildCommand).length, 1);
    assert.equal(state.running.size, 0, "the build is no longer listed once the wait ended");
  });

  it("SIGINT and SIGTERM stop every running build, then exit (130/143); Pulumi's Cancel RPC stops them without exiting", async () => {
    cb.on(StopBuildCommand).resolves({});
    const clients = awsBuildClients("eu-central-1");
    for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      const state = freshState();
      state.running.set("p:1", () => clients.stopBuild("p:1"));
      state.running.set("p:2", () => clients.stopBuild("p:2"));
      const proc = new EventEmitter() as EventEmitter & { exit: (c: number) => void };
      const exited = new Promise<number>((r) => (proc.exit = r));
      const logs: string[] = [];
      installCancelHooks(state, (m) => logs.push(m), proc, []);
      cb.resetHistory();
      proc.emit(signal);
      assert.equal(await exited, code);
      assert.deepEqual(cb.commandCalls(StopBuildCommand).map((c) => c.args[0].input.id).sort(), ["p:1", "p:2"]);
      assert.equal(state.reason, `received ${signal}`);
      assert.match(logs[0], new RegExp(`${signal}: stopping 2 image build\\(s\\) \\(p:1, p:2\\)`));
    }
    const state = freshState();
    state.running.set("p:3", () => clients.stopBuild("p:3"));
    const server = new EventEmitter();
    const proc = Object.assign(new EventEmitter(), { exit: () => assert.fail("Pulumi's cancel must not end the provider process") });
    installCancelHooks(state, () => undefined, proc, [server]);
    cb.resetHistory();
    server.emit("stream", {}, { ":path": "/pulumirpc.ResourceProvider/Create" });
    assert.equal(state.reason, undefined, "other calls are not a cancel");
    server.emit("stream", {}, { ":path": CANCEL_RPC_PATH });
    await cancelAll(state, "again", 100);
    assert.equal(state.reason, "Pulumi cancelled the update");
    assert.deepEqual([...new Set(cb.commandCalls(StopBuildCommand).map((c) => c.args[0].input.id))], ["p:3"]);
  });
});

/** @pulumi/pulumi's dynamic provider host in a process of its own, as the engine runs it, and a gRPC client to it. */
async function providerHost(env: NodeJS.ProcessEnv): Promise<{ client: ResourceProviderClient; child: ChildProcess; exit: Promise<number | null>; output: () => string }> {
  const host = require.resolve("@pulumi/pulumi/cmd/dynamic-provider/index.js");
  const child = spawn(process.execPath, [host, "127.0.0.1:1"], { cwd: path.join(__dirname, "..", ".."), env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exit = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const port = await new Promise<string>((resolve, reject) => {
    let buf = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      if (buf.includes("\n")) resolve(buf.split("\n")[0].trim());
      else out += d;
    });
    child.on("exit", () => reject(new Error(`the provider host exited: ${out}`)));
  });
  return { client: new ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()), child, exit, output: () => out };
}

const call = <Req, Res>(fn: (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown, req: Req): Promise<Res> =>
  new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res))));

describe("image build provider in Pulumi's dynamic provider host (a CodeBuild stand-in on loopback)", function () {
  this.timeout(60_000);
  let fake: FakeAws;
  let serialized: string;
  const inputs: ImageBuildInputs = {
    region: "eu-central-1",
    aws: {},
    projectName: "comfyui-eks-dev-image-build",
    sourceLocation: `ctx-bucket/contexts/comfyui/${"0".repeat(64)}.zip`,
    contextHash: "0".repeat(64),
    repositoryUrl: REPO,
    imageTag: "v0.3.64",
    dockerfile: "image/Dockerfile",
    contextDir: "image",
    buildArgs: encodeBuildArgs({ COMFYUI_VERSION: "v0.3.64" }),
    timeoutMinutes: 90,
  };
  before(async () => {
    fake = await startFakeAws();
    serialized = (await pulumi.runtime.serializeFunction(() => imageBuildProvider)).text;
  });
  after(async () => fake.close());
  beforeEach(() => void (fake.calls.length = 0));

  /** No credentials anywhere but what Configure hands the provider. */
  function hostEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("AWS_")) env[k] = v;
    return {
      ...env,
      PULUMI_NODEJS_PROJECT: "comfyui-eks",
      AWS_ENDPOINT_URL_CODEBUILD: fake.url,
      AWS_ENDPOINT_URL_CLOUDWATCH_LOGS: fake.url,
      AWS_SHARED_CREDENTIALS_FILE: path.join(os.tmpdir(), "no-such-aws-credentials"),
      AWS_CONFIG_FILE: path.join(os.tmpdir(), "no-such-aws-config"),
      AWS_EC2_METADATA_DISABLED: "true",
    };
  }

  async function startBuild(env: NodeJS.ProcessEnv) {
    const host = await providerHost(env);
    const configure = new ConfigureRequest();
    // As the engine sends the stack's configuration: every key with its namespace, secrets decrypted.
    configure.setArgs(Struct.fromJavaScript({ "aws:region": "eu-central-1", "aws:accessKey": "AKIACONFIGURED", "aws:secretKey": "configured-secret", "comfyui-eks:imageBuild": "aws" }));
    await call(host.client.configure.bind(host.client), configure);
    const create = new CreateRequest();
    create.setUrn("urn:pulumi:dev::comfyui-eks::pulumi-nodejs:dynamic/comfyui-image:ImageBuild::b");
    create.setProperties(Struct.fromJavaScript({ ...inputs, __provider: serialized } as never));
    const created = call(host.client.create.bind(host.client), create).then(
      () => undefined,
      (e: Error) => e,
    );
    const start = await fake.waitFor("StartBuild", 20_000);
    return { host, created, start };
  }

  it("signs with the stack's keys from Configure, in the stack's region; Pulumi's Cancel sends StopBuild and the create fails as cancelled", async () => {
    const { host, created, start } = await startBuild(hostEnv());
    try {
      assert.equal(start.accessKeyId, "AKIACONFIGURED", "the stack's static keys, which never were an input");
      assert.equal(start.region, "eu-central-1");
      assert.equal(start.body.projectName, inputs.projectName);
      await fake.waitFor("BatchGetBuilds");
      await call(host.client.cancel.bind(host.client), new Empty());
      const stop = await fake.waitFor("StopBuild", 10_000);
      assert.match(String(stop.body.id), new RegExp(`^${inputs.projectName}:fake-\\d+$`), "the build the provider started");
      const err = await created;
      assert.match(String(err?.message), /cancelled \(Pulumi cancelled the update\)/, host.output());
    } finally {
      host.client.close();
      host.child.kill("SIGKILL");
    }
  });

  it("SIGINT to the provider process (the engine closing it) sends StopBuild, then the process exits 130", async () => {
    const { host, start } = await startBuild(hostEnv());
    try {
      await fake.waitFor("BatchGetBuilds");
      host.child.kill("SIGINT");
      const stop = await fake.waitFor("StopBuild", 5_000);
      assert.equal(start.body.projectName, inputs.projectName);
      assert.match(String(stop.body.id), new RegExp(`^${inputs.projectName}:fake-\\d+$`), "the build the provider started");
      assert.equal(stop.accessKeyId, "AKIACONFIGURED");
      assert.equal(await host.exit, 130, host.output());
    } finally {
      host.client.close();
      host.child.kill("SIGKILL");
    }
  });
});
