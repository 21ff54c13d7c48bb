import * as pulumi from "@pulumi/pulumi";
import { strict as assert } from "node:assert";
import { CONFIG_KEYS, ConfigError, RawConfig, parseConfig } from "../../config";
import { stackConfig } from "../support/program";

// A fixed day, so the support-date rules give the same answer whenever the suite runs.
const ctx = { project: "comfyui-eks", stack: "dev", today: new Date("2026-12-01T12:00:00Z") };
const base: RawConfig = { "aws:region": "us-west-2" };

function problems(raw: RawConfig): string[] {
  try {
    parseConfig({ ...base, ...raw }, ctx);
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e.problems;
  }
  return [];
}

describe("config", () => {
  it("has documented defaults that equal Pulumi.dev.yaml", () => {
    const defaults = parseConfig(base, ctx);
    const dev = stackConfig("dev");
    const fromFile: RawConfig = {};
    for (const [k, v] of Object.entries(dev)) fromFile[k.replace(/^comfyui-eks:/, "")] = v;
    const fromDev = parseConfig(fromFile, ctx);
    assert.deepEqual(fromDev, defaults);
    assert.equal(defaults.natGateways, "single");
    assert.equal(defaults.minReplicas, 0);
    assert.deepEqual(defaults.gpuCapacityTypes, ["spot", "on-demand"]);
  });

  it("names only keys the program reads in Pulumi.dev.yaml (no typos)", () => {
    for (const key of Object.keys(stackConfig("dev"))) {
      if (key.startsWith("aws:")) continue;
      assert.ok((CONFIG_KEYS as readonly string[]).includes(key.replace(/^comfyui-eks:/, "")), `unknown key ${key}`);
    }
  });

  const invalid: [string, RawConfig, RegExp][] = [
    ["aws:region", { "aws:region": "mars-1" }, /aws:region/],
    ["kubernetesVersion", { kubernetesVersion: "latest" }, /kubernetesVersion/],
    ["kubernetesVersion (past extended support)", { kubernetesVersion: "1.31" }, /kubernetesVersion: .*KEDA 2\.20\.2/],
    ["kubernetesVersion (not tested by KEDA)", { kubernetesVersion: "1.36" }, /kubernetesVersion: 1\.36 is not supported by KEDA 2\.20\.2 \(1\.33–1\.35\)/],
    ["mountpointAddonVersion", { mountpointAddonVersion: "latest" }, /mountpointAddonVersion: must be an EKS add-on version/],
    ["imageBuild", { imageBuild: "cloud" }, /imageBuild: must be one of aws, local/],
    ["alertEmails", { alertEmails: '["ops-at-studio"]' }, /alertEmails: "ops-at-studio" is not an email address/],
    ["logRetentionDays", { logRetentionDays: "45" }, /logRetentionDays: must be one of CloudWatch Logs' retention periods/],
    ["gpuDailyBudgetUsd", { gpuDailyBudgetUsd: "-5" }, /gpuDailyBudgetUsd: must be a positive number of USD/],
    ["availabilityZones", { availabilityZones: "5" }, /availabilityZones: must be between 2 and 3/],
    ["availabilityZones (text)", { availabilityZones: "two" }, /availabilityZones: must be a whole number/],
    ["vpcCidr", { vpcCidr: "10.0.0.0/8" }, /vpcCidr/],
    ["natGateways", { natGateways: "many" }, /natGateways: must be one of single, onePerAz/],
    ["apiAllowedCidrs", { apiAllowedCidrs: '["not-a-cidr"]' }, /apiAllowedCidrs/],
    ["systemNodeInstanceType", { systemNodeInstanceType: "g5.xlarge" }, /systemNodeInstanceType: .*GPU type/],
    ["gpuInstanceTypes", { gpuInstanceTypes: '["G5 XLarge"]' }, /gpuInstanceTypes: "G5 XLarge" is not an EC2 instance type name/],
    ["gpuInstanceTypes (twice)", { gpuInstanceTypes: '["g5.xlarge","g5.xlarge"]' }, /gpuInstanceTypes: lists a type twice/],
    ["gpuInstanceTypes (not a list)", { gpuInstanceTypes: "g5.xlarge" }, /gpuInstanceTypes: must be a list/],
    ["gpuCapacityTypes", { gpuCapacityTypes: '["reserved"]' }, /gpuCapacityTypes/],
    ["gpuLimit", { gpuLimit: "0" }, /gpuLimit/],
    ["gpuAmiAlias", { gpuAmiAlias: "al2023@latest" }, /gpuAmiAlias: .*is not pinned: @latest drifts every GPU node/],
    ["gpuConsolidateAfter", { gpuConsolidateAfter: "soon" }, /gpuConsolidateAfter/],
    ["gpuExpireAfter", { gpuExpireAfter: "1 week" }, /gpuExpireAfter/],
    ["modelsHotSet", { modelsHotSet: '["../etc/passwd"]' }, /modelsHotSet/],
    ["modelsBootFillSeconds", { modelsBootFillSeconds: "3600" }, /modelsBootFillSeconds/],
    ["comfyuiVersion", { comfyuiVersion: "master" }, /comfyuiVersion/],
    ["comfyuiCommit", { comfyuiCommit: "abc" }, /comfyuiCommit/],
    ["retainBucketsOnDestroy", { retainBucketsOnDestroy: "yes" }, /retainBucketsOnDestroy: must be true or false/],
    ["edgeEnabled", { edgeEnabled: "on" }, /edgeEnabled/],
    ["edgeUsername (gone)", { edgeUsername: "studio" }, /edgeUsername: is no longer used.*pulumi config rm edgeUsername/],
    ["edgePassword (gone)", { edgePassword: "(set)" }, /edgePassword: is no longer used/],
    ["signIn", { signIn: "basic" }, /signIn/],
    ["oidcIssuer (missing)", { signIn: "oidc", oidcClientId: "x" }, /oidcIssuer: is required with signIn=oidc/],
    ["oidcIssuer (http)", { signIn: "oidc", oidcIssuer: "http://idp.example", oidcClientId: "x" }, /oidcIssuer: must be an https URL/],
    ["oidcClientId (missing)", { signIn: "oidc", oidcIssuer: "https://idp.example" }, /oidcClientId: is required/],
    ["oidcClientSecret (missing)", { signIn: "oidc", oidcIssuer: "https://idp.example", oidcClientId: "x" }, /oidcClientSecret: is required with signIn=oidc/],
    ["oidcIssuer with cognito", { oidcIssuer: "https://idp.example" }, /oidcIssuer: is only read with signIn=oidc/],
    ["cognitoFederation (not JSON)", { cognitoFederation: "google" }, /cognitoFederation: must be an object/],
    ["cognitoFederation.type", { cognitoFederation: '{"type":"LDAP","name":"Corp"}' }, /cognitoFederation.type: must be OIDC or SAML/],
    ["cognitoFederation.issuer", { cognitoFederation: '{"type":"OIDC","name":"Google","issuer":"accounts.google.com","clientId":"x"}' }, /cognitoFederation.issuer/],
    ["cognitoFederation.metadataUrl", { cognitoFederation: '{"type":"SAML","name":"Entra"}' }, /cognitoFederation.metadataUrl/],
    ["cognitoFederationClientSecret (missing)", { cognitoFederation: '{"type":"OIDC","name":"Google","issuer":"https://accounts.google.com","clientId":"x"}' }, /cognitoFederationClientSecret: is required/],
    ["comfyuiEgressCidrs", { comfyuiEgressCidrs: '["api.example.com"]' }, /comfyuiEgressCidrs: "api.example.com" is not an IPv4 CIDR/],
    ["edgePriceClass", { edgePriceClass: "cheap" }, /edgePriceClass/],
    ["maxReplicas > gpuLimit", { maxReplicas: "8", gpuLimit: "4" }, /maxReplicas: .*gpuLimit is 4/],
    ["minReplicas > maxReplicas", { minReplicas: "3", maxReplicas: "2" }, /minReplicas/],
    ["workingHours.timezone", { workingHours: '{"start":"0 9 * * 1-5","end":"0 19 * * 1-5","timezone":"Mars/Olympus"}' }, /workingHours.timezone/],
    ["workingHours.start", { workingHours: '{"start":"9am","end":"0 19 * * 1-5","timezone":"Europe/Berlin"}' }, /workingHours.start/],
    ["workingHours (not an object)", { workingHours: "always" }, /workingHours: must be an object/],
    ["drainSeconds", { drainSeconds: "5" }, /drainSeconds/],
  ];
  for (const [name, raw, expected] of invalid) {
    it(`rejects an invalid ${name}, naming the key`, () => {
      const found = problems(raw);
      assert.ok(found.some((p) => expected.test(p)), `got: ${found.join(" | ")}`);
    });
  }

  it("reports every problem at once", () => {
    const found = problems({ natGateways: "x", gpuLimit: "-1", comfyuiCommit: "zz", edgeEnabled: "maybe" });
    for (const key of ["natGateways", "gpuLimit", "comfyuiCommit", "edgeEnabled"]) {
      assert.ok(found.some((p) => p.startsWith(`${key}:`)), `${key} missing from: ${found.join(" | ")}`);
    }
    assert.throws(() => parseConfig({ ...base, natGateways: "x", gpuLimit: "-1" }, ctx), /Invalid stack configuration:\n {2}- .*\n {2}- /);
  });

  it("accepts a working-hours floor", () => {
    const cfg = parseConfig({ ...base, workingHours: '{"start":"0 9 * * 1-5","end":"0 19 * * 1-5","timezone":"Europe/Berlin","replicas":1}' }, ctx);
    assert.deepEqual(cfg.workingHours, { start: "0 9 * * 1-5", end: "0 19 * * 1-5", timezone: "Europe/Berlin", replicas: 1 });
  });

  it("accepts any GPU type name: EC2's own data decides at preview (karpenter/gpuTypes.ts)", () => {
    assert.deepEqual(parseConfig({ ...base, gpuInstanceTypes: '["g6e.4xlarge","g6.12xlarge","p5.48xlarge"]' }, ctx).gpuInstanceTypes, ["g6e.4xlarge", "g6.12xlarge", "p5.48xlarge"]);
  });
});

describe("config: EKS version support dates", () => {
  const judge = (version: string, day: string) => {
    const warnings: string[] = [];
    let error: string | undefined;
    try {
      parseConfig({ ...base, kubernetesVersion: version, apiAllowedCidrs: '["203.0.113.0/24"]' }, { ...ctx, today: new Date(day), warn: (m) => warnings.push(m) });
    } catch (e) {
      error = (e as ConfigError).problems.join("\n");
    }
    return { warnings, error };
  };

  it("defaults to 1.35, the newest version Karpenter 1.14, KEDA 2.20 and the AMI release all support", () => {
    assert.equal(parseConfig(base, ctx).kubernetesVersion, "1.35");
  });

  it("warns a month ahead that 1.34 leaves standard support on 2026-12-02", () => {
    const r = judge("1.34", "2026-12-01T12:00:00Z");
    assert.equal(r.error, undefined);
    assert.match(r.warnings.join(), /kubernetesVersion: EKS 1\.34 leaves standard support in 1 day\(s\), on 2026-12-02/);
  });

  it("warns that a version past standard support bills extended support, naming the price", () => {
    const r = judge("1.34", "2026-12-03T00:00:00Z");
    assert.equal(r.error, undefined);
    assert.match(r.warnings.join(), /left standard support on 2026-12-02: the control plane bills extended support \(\$0\.60\/h instead of \$0\.10\/h/);
  });

  it("refuses a version past extended support", () => {
    const r = judge("1.33", "2027-07-30T00:00:00Z");
    assert.match(r.error ?? "", /kubernetesVersion: EKS 1\.33 left extended support on 2027-07-29/);
  });

  it("says nothing for a version well inside standard support", () => {
    assert.deepEqual(judge("1.35", "2026-12-01T00:00:00Z"), { warnings: [], error: undefined });
  });
});

describe("config: sign-in and exposure", () => {
  const secret = (v: string) => pulumi.secret(v);
  it("signs in with the stack's Cognito pool by default, no federation, ComfyUI egress closed", () => {
    const c = parseConfig(base, ctx);
    assert.equal(c.signIn, "cognito");
    assert.equal(c.cognitoFederation, undefined);
    assert.deepEqual(c.comfyuiEgressCidrs, []);
  });

  it("takes any OIDC issuer with its client and secret", () => {
    const c = parseConfig({ ...base, signIn: "oidc", oidcIssuer: "https://login.microsoftonline.com/t/v2.0", oidcClientId: "app" }, { ...ctx, secrets: { oidcClientSecret: secret("s") } });
    assert.equal(c.oidcIssuer, "https://login.microsoftonline.com/t/v2.0");
    assert.equal(c.oidcClientId, "app");
    assert.ok(c.oidcClientSecret);
  });

  it("federates Cognito to an OIDC or SAML IdP", () => {
    const oidc = parseConfig({ ...base, cognitoFederation: '{"type":"OIDC","name":"Google","issuer":"https://accounts.google.com","clientId":"g"}' }, { ...ctx, secrets: { cognitoFederationClientSecret: secret("s") } });
    assert.deepEqual(oidc.cognitoFederation, { type: "OIDC", name: "Google", issuer: "https://accounts.google.com", clientId: "g", scopes: "openid email profile" });
    const saml = parseConfig({ ...base, cognitoFederation: '{"type":"SAML","name":"Entra","metadataUrl":"https://login.microsoftonline.com/t/federationmetadata/2007-06/federationmetadata.xml"}' }, ctx);
    assert.equal(saml.cognitoFederation?.type, "SAML");
  });

  it("warns while the Kubernetes API is open to the internet, and not once it is narrowed", () => {
    const open: string[] = [];
    parseConfig(base, { ...ctx, warn: (m) => open.push(m) });
    assert.ok(open.some((m) => /apiAllowedCidrs: the Kubernetes API endpoint is open to the whole internet/.test(m)), open.join("\n"));
    const narrow: string[] = [];
    parseConfig({ ...base, apiAllowedCidrs: '["203.0.113.0/24"]' }, { ...ctx, warn: (m) => narrow.push(m) });
    assert.ok(!narrow.some((m) => m.includes("apiAllowedCidrs")), narrow.join("\n"));
  });
});

describe("config: the GPU pool's rules are the component's (karpenter/rules.ts)", () => {
  // The config and GpuCapacity judge with the same functions: what one accepts the other cannot refuse.
  const componentArgs = { instanceTypes: ["g6.xlarge"], capacityTypes: ["spot"], gpuLimit: 4, consolidateAfter: "5m", expireAfter: "168h", rootVolumeGiB: 100, amiAlias: "al2023@v20260724" };
  const cases: [string, Record<string, string>, Partial<typeof componentArgs>][] = [
    ["alias re-release", { gpuAmiAlias: "al2023@v20260724-2" }, { amiAlias: "al2023@v20260724-2" }],
    ["alias latest", { gpuAmiAlias: "al2023@latest" }, { amiAlias: "al2023@latest" }],
    ["alias bottlerocket", { gpuAmiAlias: "bottlerocket@v1.10.0" }, { amiAlias: "bottlerocket@v1.10.0" }],
    ["duration any order", { gpuConsolidateAfter: "30s1m" }, { consolidateAfter: "30s1m" }],
    ["duration units", { gpuExpireAfter: "7d" }, { expireAfter: "7d" }],
    ["expire never", { gpuExpireAfter: "Never" }, { expireAfter: "Never" }],
  ];
  for (const [name, raw, args] of cases) {
    it(`${name}: config and component agree`, async () => {
      const { validateGpuCapacityArgs } = await import("../../karpenter");
      const byConfig = problems(raw).filter((p) => /gpuAmiAlias|gpuConsolidateAfter|gpuExpireAfter/.test(p));
      const byComponent = validateGpuCapacityArgs({ ...componentArgs, ...args } as never).filter((p) => /amiAlias|consolidateAfter|expireAfter/.test(p.propertyPath));
      assert.equal(byConfig.length > 0, byComponent.length > 0, `config: ${byConfig.join("; ")} / component: ${byComponent.map((p) => p.reason).join("; ")}`);
    });
  }
});
