/**
 * What the gateway is told: its container env (from the gateway's settings table, so its loader reads
 * what is written), the sign-in Secret it re-reads, and KEDA's trigger on its scaling figure.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { settingsEnv } from "../contracts/gateway";
import {
  GATEWAY_ADMIN_PORT,
  GATEWAY_LABELS,
  GATEWAY_METRICS_SERVICE,
  GATEWAY_NAME,
  GATEWAY_OIDC_DIR,
  GATEWAY_OIDC_FILE,
  GATEWAY_OIDC_SECRET,
  GATEWAY_OUTPUTS_PREFIX,
  GATEWAY_PORT,
  GATEWAY_SCALING_FIELD,
  GATEWAY_SCALING_PATH,
  GATEWAY_DEFAULTS,
  type GatewayArgs,
} from "./gatewayNames";

/**
 * The gateway container's env, named by the gateway's settings table (contract.ts); POD_NAME, POD_NAMESPACE
 * and POD_IP come from the downward API. test/program renders it and loads it with the gateway's loader.
 */
export function gatewayEnv(args: GatewayArgs, tableName: pulumi.Input<string>): Record<string, pulumi.Input<string>> {
  const auth = args.auth ?? "oidc";
  return {
    GATEWAY_MODE: "kubernetes",
    ...settingsEnv<pulumi.Input<string>>({
      auth,
      oidcFile: auth === "oidc" ? `${GATEWAY_OIDC_DIR}/${GATEWAY_OIDC_FILE}` : undefined,
      auditLogGroup: args.auditLogGroupName,
      port: String(GATEWAY_PORT),
      adminPort: String(GATEWAY_ADMIN_PORT),
      table: tableName,
      region: args.region,
      outputsBucket: args.outputsBucket,
      outputsPrefix: GATEWAY_OUTPUTS_PREFIX,
      inputsBucket: args.inputsBucket,
      userdataBucket: args.userdataBucket,
      comfyuiService: args.comfyuiService,
      leaseName: GATEWAY_NAME,
      maxUploadMb: String(args.maxUploadMb ?? GATEWAY_DEFAULTS.maxUploadMb),
      startupDeadlineSeconds: String(args.startupDeadlineSeconds ?? GATEWAY_DEFAULTS.startupDeadlineSeconds),
      historyTtlDays: String(args.historyDays ?? GATEWAY_DEFAULTS.historyDays),
      clusterName: args.clusterName,
      metricsLogGroup: args.metricsLogGroupName,
      modelsBucket: args.modelsBucket,
    }),
  };
}

/**
 * The sign-in settings Secret the gateway's Deployment mounts (optional there): written once the issuer's
 * client exists, after the site's address is known (ComfyGateway.signInWith). The whole file is one secret value.
 */
export function gatewayOidcSecret(
  name: string,
  args: {
    namespace: string;
    oidc: { issuer: pulumi.Input<string>; clientId: pulumi.Input<string>; clientSecret: pulumi.Input<string>; publicUrl: pulumi.Input<string>; logoutUrl?: pulumi.Input<string> };
    provider: k8s.Provider;
    dependsOn?: pulumi.Input<pulumi.Resource>[];
  },
  opts?: pulumi.CustomResourceOptions,
): k8s.core.v1.Secret {
  const file = pulumi.secret(
    pulumi.all([args.oidc.issuer, args.oidc.clientId, args.oidc.clientSecret, args.oidc.publicUrl, args.oidc.logoutUrl]).apply(([issuer, clientId, clientSecret, publicUrl, logoutUrl]) =>
      JSON.stringify({ issuer, clientId, clientSecret, publicUrl, ...(logoutUrl ? { logoutUrl } : {}) }),
    ),
  );
  return new k8s.core.v1.Secret(
    name,
    { metadata: { name: GATEWAY_OIDC_SECRET, namespace: args.namespace, labels: GATEWAY_LABELS }, type: "Opaque", stringData: { [GATEWAY_OIDC_FILE]: file } },
    { ...opts, provider: args.provider, dependsOn: args.dependsOn },
  );
}

/** The KEDA trigger on the gateway's figure: never an error, 0 when idle, able to wake from zero. */
export function gatewayScalingTrigger(namespace: string, promptsPerPod: number): Record<string, unknown> {
  return {
    type: "metrics-api",
    name: "gateway-prompts",
    metadata: {
      url: `http://${GATEWAY_METRICS_SERVICE}.${namespace}.svc.cluster.local:${GATEWAY_ADMIN_PORT}${GATEWAY_SCALING_PATH}`,
      format: "json",
      valueLocation: GATEWAY_SCALING_FIELD,
      targetValue: String(promptsPerPod),
      activationTargetValue: "0",
    },
  };
}
