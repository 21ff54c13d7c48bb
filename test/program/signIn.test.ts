/**
 * Sign-in and exposure, as rules over the whole program graph (issue 17): who signs artists in and how the
 * gateway learns it, that its secrets travel only as secrets, the NetworkPolicies around ComfyUI pods, the
 * audit trail, and that no pod on a system node can borrow the node's role.
 */
import { strict as assert } from "node:assert";
import { GATEWAY_INTERNAL_SECRET, GATEWAY_OIDC_DIR, GATEWAY_OIDC_FILE, GATEWAY_OIDC_SECRET, GATEWAY_LABELS } from "../../workload/gatewayDeployment";
import { SETTINGS } from "../../contracts/gateway";
import { validateK8s } from "../support/k8sSchemas";
import { RecordedResource } from "../support/mocks";
import { ProgramRun, runProgram, runProgramWith } from "../support/program";

/** Pulumi's marker for a secret value on the wire (the mocks see inputs as serialized). */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const isSecret = (v: unknown) => typeof v === "object" && v !== null && (v as Record<string, unknown>)[SECRET_SIG] !== undefined;
const reveal = (v: unknown) => (isSecret(v) ? (v as { value: unknown }).value : v);

function gatewayDeployment(p: ProgramRun): RecordedResource {
  return p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui-gateway")!;
}
function secretNamed(p: ProgramRun, name: string): RecordedResource {
  const found = p.rec.ofType("kubernetes:core/v1:Secret").filter((s) => s.inputs.metadata.name === name);
  assert.equal(found.length, 1, `one Secret ${name}`);
  return found[0];
}
function policy(p: ProgramRun, name: string): Record<string, any> {
  const found = p.rec.ofType("kubernetes:networking.k8s.io/v1:NetworkPolicy").filter((n) => n.inputs.metadata.name === name);
  assert.equal(found.length, 1, `one NetworkPolicy ${name}`);
  return found[0].inputs;
}

describe("program: sign-in, secrets and exposure", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("creates a Cognito user pool with admin-only sign-up, the artist and admin groups, and a code-flow client whose callback is the site's", () => {
    const pool = p.rec.one("aws:cognito/userPool:UserPool").inputs;
    assert.equal(pool.adminCreateUserConfig.allowAdminCreateUserOnly, true, "nobody signs themselves up");
    // Kept on destroy like the buckets (retainBucketsOnDestroy: true in dev): protected, and left out of the delete.
    const poolRes = p.rec.one("aws:cognito/userPool:UserPool");
    assert.equal(pool.deletionProtection, "ACTIVE");
    assert.equal(poolRes.options.retainOnDelete, true);
    assert.ok(pool.passwordPolicy.minimumLength >= 12);
    assert.deepEqual(p.rec.ofType("aws:cognito/userGroup:UserGroup").map((g) => g.inputs.name).sort(), ["admin", "artist"]);
    const client = p.rec.one("aws:cognito/userPoolClient:UserPoolClient").inputs;
    assert.equal(client.generateSecret, true, "a confidential client: the secret stays with the gateway");
    assert.deepEqual(client.allowedOauthFlows, ["code"], "authorization code only (no implicit flow)");
    assert.deepEqual(client.callbackUrls, [`${p.outputs.url}/auth/callback`]);
    assert.ok(client.allowedOauthScopes.includes("openid"));
    assert.deepEqual(client.supportedIdentityProviders, ["COGNITO"]);
    assert.equal(p.rec.ofType("aws:cognito/identityProvider:IdentityProvider").length, 0, "no federation unless configured");
    assert.equal(p.rec.one("aws:cognito/userPoolDomain:UserPoolDomain").inputs.managedLoginVersion, 2);
  });

  it("hands the gateway its issuer, client and secret as one secret file it mounts, and signs in with it", async () => {
    const s = secretNamed(p, GATEWAY_OIDC_SECRET).inputs;
    assert.ok(isSecret(s.stringData), "the settings file (it holds the client secret) is a Pulumi secret");
    const file = (reveal(s.stringData) as Record<string, string>)[GATEWAY_OIDC_FILE];
    const oidc = JSON.parse(file);
    assert.equal(oidc.issuer, `https://cognito-idp.us-west-2.amazonaws.com/${p.outputs.userPoolId}`, "Cognito's issuer for this pool");
    assert.equal(oidc.publicUrl, p.outputs.url);
    const client = p.rec.one("aws:cognito/userPoolClient:UserPoolClient");
    assert.equal(oidc.clientId, client.id, "the client the pool made");
    assert.equal(oidc.clientSecret, "mock-cognito-client-secret-0123456789abcdef", "the secret Cognito generated");
    assert.equal(oidc.logoutUrl, `${p.outputs.loginDomain}/logout?client_id=${client.id}&logout_uri=${encodeURIComponent(`${p.outputs.url}/`)}`, "Cognito's logout endpoint, back to a URL the client lists");
    assert.deepEqual(client.inputs.logoutUrls, [`${p.outputs.url}/`]);
    const gw = gatewayDeployment(p).inputs.spec.template.spec;
    const c = gw.containers[0];
    const env = new Map<string, any>(c.env.map((e: { name: string }) => [e.name, e]));
    assert.equal(env.get(SETTINGS.auth.env).value, "oidc");
    assert.equal(env.get(SETTINGS.oidcFile.env).value, `${GATEWAY_OIDC_DIR}/${GATEWAY_OIDC_FILE}`);
    const vol = gw.volumes.find((v: { secret?: { secretName: string } }) => v.secret?.secretName === GATEWAY_OIDC_SECRET);
    assert.ok(vol, "the Secret is mounted");
    assert.equal(vol.secret.optional, true, "optional: the Secret is written after the Deployment (the client needs the site's address)");
    const mount = c.volumeMounts.find((m: { name: string }) => m.name === vol.name);
    assert.equal(mount.mountPath, GATEWAY_OIDC_DIR);
    assert.equal(mount.subPath, undefined, "a subPath mount would never see the Secret appear or change");
    assert.equal(mount.readOnly, true);
    await validateK8s({ apiVersion: "v1", kind: "Secret", metadata: s.metadata, type: s.type, stringData: { [GATEWAY_OIDC_FILE]: file } });
  });

  it("gives the replicas a random shared token only through a Secret", () => {
    const s = secretNamed(p, GATEWAY_INTERNAL_SECRET).inputs;
    assert.ok(isSecret(s.stringData), "the token is a Pulumi secret");
    assert.equal(Object.values(reveal(s.stringData) as Record<string, string>)[0], "mock-generated-password-0123456789");
    const c = gatewayDeployment(p).inputs.spec.template.spec.containers[0];
    const e = c.env.find((x: { name: string }) => x.name === SETTINGS.internalToken.env);
    assert.equal(e.value, undefined, "never a plain env value");
    assert.equal(e.valueFrom.secretKeyRef.name, GATEWAY_INTERNAL_SECRET);
  });

  it("puts no secret in clear anywhere in the graph: no env value, ConfigMap or output holds the client secret or the token", () => {
    const secrets = ["mock-cognito-client-secret-0123456789abcdef", "mock-generated-password-0123456789"];
    for (const r of p.rec.resources) {
      const plain = JSON.stringify(r.inputs, (_k, v) => (isSecret(v) ? "[secret]" : v));
      for (const s of secrets) assert.ok(!plain.includes(s), `${r.type} ${r.name} holds a secret in clear`);
    }
    const outputs = JSON.stringify(p.outputs);
    for (const s of secrets) assert.ok(!outputs.includes(s), "a stack output holds a secret");
    for (const key of ["edgePassword", "edgeUsername"]) assert.equal(p.outputs[key], undefined, `${key} is gone`);
  });

  it("ComfyUI pods accept only the gateway and reach only cluster DNS", async () => {
    const np = policy(p, "allow-gateway-to-comfyui");
    const spec = np.spec;
    assert.deepEqual(spec.policyTypes.sort(), ["Egress", "Ingress"]);
    assert.equal(spec.ingress.length, 1);
    assert.deepEqual(spec.ingress[0].from, [{ podSelector: { matchLabels: GATEWAY_LABELS } }], "no ipBlock: other pods' addresses are in any VPC range");
    assert.equal(JSON.stringify(spec.ingress).includes("ipBlock"), false);
    assert.equal(spec.egress.length, 1, "DNS only");
    assert.deepEqual(spec.egress[0].to, [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } }, podSelector: { matchLabels: { "k8s-app": "kube-dns" } } }]);
    assert.deepEqual(spec.egress[0].ports.map((x: { protocol: string; port: number }) => `${x.protocol}/${x.port}`).sort(), ["TCP/53", "UDP/53"]);
    // The ComfyUI pods are selected by this policy (the Deployment's labels match).
    const comfy = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!.inputs;
    for (const [k, v] of Object.entries(spec.podSelector.matchLabels)) assert.equal(comfy.spec.template.metadata.labels[k], v);
    await validateK8s({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: np.metadata, spec });
  });

  it("the gateway's internal port admits only KEDA's namespace and the gateway's own pods", () => {
    const spec = policy(p, "allow-alb-and-keda-to-gateway").spec;
    const internal = spec.ingress.filter((r: { ports: { port: number }[] }) => r.ports.some((x) => x.port === 8189));
    assert.deepEqual(
      internal.map((r: { from: unknown[] }) => r.from).flat(),
      [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "keda" } } }, { podSelector: { matchLabels: GATEWAY_LABELS } }],
    );
    const ingress = p.rec.one("kubernetes:networking.k8s.io/v1:Ingress").inputs;
    assert.equal(ingress.spec.defaultBackend.service.port.number, 8188, "the ALB routes only the public port");
    const svc = p.rec.ofType("kubernetes:core/v1:Service").find((s) => s.inputs.metadata.name === "comfyui-gateway")!.inputs;
    assert.deepEqual(svc.spec.ports.map((x: { port: number }) => x.port), [8188], "the Service the Ingress uses has no internal port");
  });

  it("writes the audit trail to its own log group with the configured retention, named in the gateway's env", () => {
    const group = p.rec.ofType("aws:cloudwatch/logGroup:LogGroup").find((g) => String(g.inputs.name).endsWith("/audit"));
    assert.ok(group, "an audit log group");
    assert.equal(group.inputs.retentionInDays, 30);
    const c = gatewayDeployment(p).inputs.spec.template.spec.containers[0];
    assert.equal(c.env.find((e: { name: string }) => e.name === SETTINGS.auditLogGroup.env).value, group.inputs.name);
    assert.equal(p.outputs.auditLogGroup, group.inputs.name);
  });

  it("system nodes answer IMDS only with a token and one hop, so pods cannot take the node role; GPU nodes too", () => {
    const ng = p.rec.one("aws:eks/nodeGroup:NodeGroup").inputs;
    assert.ok(ng.launchTemplate?.id, "the system node group uses a launch template");
    const lt = p.rec.ofType("aws:ec2/launchTemplate:LaunchTemplate").find((t) => ng.launchTemplate.id === `${t.name}-id`);
    assert.ok(lt, "the launch template of the node group");
    assert.deepEqual(lt.inputs.metadataOptions, { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1 });
    assert.equal(lt.inputs.imageId, undefined, "no AMI: EKS keeps choosing it and writing the bootstrap");
    const nodeClass = p.rec.ofType("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass");
    assert.ok(nodeClass.length > 0);
    for (const nc of nodeClass) assert.equal(nc.inputs.spec.metadataOptions.httpPutResponseHopLimit, 1);
    // Karpenter would ask IMDS for its region without one.
    const karpenter = p.rec.ofType("kubernetes:helm.sh/v3:Release").find((r) => r.inputs.name === "karpenter")!.inputs;
    assert.deepEqual(karpenter.values.controller.env, [{ name: "AWS_REGION", value: "us-west-2" }]);
  });

  it("prints the one command that adds an artist, and how to mint an API key", () => {
    const c = p.outputs.commands as Record<string, string>;
    assert.match(c.addArtist, new RegExp(`^aws cognito-idp admin-create-user --region us-west-2 --user-pool-id ${p.outputs.userPoolId} .*admin-add-user-to-group .*--group-name artist$`));
    assert.match(c.createApiKey, /^npm run keys -- create --table \S+ --region us-west-2 --owner \S+ --scope read,submit$/);
    assert.equal(c.showPassword, undefined);
  });

  describe("variants", function () {
    it("an external OIDC issuer instead of Cognito: no user pool, the issuer and secret reach the gateway", async () => {
      const v = await runProgramWith({
        "comfyui-eks:signIn": "oidc",
        "comfyui-eks:oidcIssuer": "https://login.microsoftonline.com/tenant/v2.0",
        "comfyui-eks:oidcClientId": "comfyui-app",
        "comfyui-eks:oidcClientSecret": "entra-client-secret",
      });
      assert.equal(v.rec.ofType("aws:cognito/userPool:UserPool").length, 0);
      const data = secretNamed(v, GATEWAY_OIDC_SECRET).inputs.stringData;
      assert.ok(isSecret(data));
      assert.deepEqual(JSON.parse((reveal(data) as Record<string, string>)[GATEWAY_OIDC_FILE]), { issuer: "https://login.microsoftonline.com/tenant/v2.0", clientId: "comfyui-app", clientSecret: "entra-client-secret", publicUrl: v.outputs.url });
      assert.equal((v.outputs.commands as Record<string, string>).addArtist, undefined, "users are added at the studio's IdP");
    });

    it("federation to the studio's IdP and egress for custom nodes", async () => {
      const v = await runProgramWith({
        "comfyui-eks:cognitoFederation": '{"type":"SAML","name":"Entra","metadataUrl":"https://login.microsoftonline.com/t/federationmetadata/2007-06/federationmetadata.xml"}',
        "comfyui-eks:comfyuiEgressCidrs": '["203.0.113.0/24"]',
        "comfyui-eks:retainBucketsOnDestroy": "false",
      });
      const idp = v.rec.one("aws:cognito/identityProvider:IdentityProvider").inputs;
      assert.equal(idp.providerType, "SAML");
      assert.deepEqual(v.rec.one("aws:cognito/userPoolClient:UserPoolClient").inputs.supportedIdentityProviders, ["COGNITO", "Entra"]);
      const spec = policy(v, "allow-gateway-to-comfyui").spec;
      assert.equal(v.rec.one("aws:cognito/userPool:UserPool").inputs.deletionProtection, "INACTIVE", "retainBucketsOnDestroy false: destroy deletes the pool");
      assert.equal(v.rec.one("aws:cognito/userPool:UserPool").options.retainOnDelete, false);
      assert.equal(spec.egress.length, 2);
      assert.deepEqual(spec.egress[1], { to: [{ ipBlock: { cidr: "203.0.113.0/24" } }] });
    });
  });
});
