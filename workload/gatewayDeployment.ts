/**
 * The gateway as deployed, a component of the stack beside ComfyUI's (workload/index.ts): its DynamoDB
 * table, its Pod Identity role, RBAC, the Deployment of two replicas on the system nodes (both serve; one
 * leads through a Lease and dispatches), its Services and PDB, the ALB's Ingress with its security group
 * and the gateway's NetworkPolicy (gatewayIngress.ts), and the sign-in Secret (signInWith).
 * Everything here follows the contract in workload/gateway/README.md, which the gateway's code keeps.
 *
 * Until issue 20 this component was a child of ComfyWorkload: it names that place in `aliases` (and the
 * engine carries the alias to every child), so a deployed stack keeps its table, role and pods.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { SYSTEM_NODE_LABEL } from "../cluster";
import { PodIdentityRole } from "../cluster/iam";
import { SETTINGS } from "../contracts/gateway";
import { AGENT_NAMES } from "../contracts/modelsAgent";
import { GATEWAY_PORT, GATEWAY_ADMIN_PORT, GATEWAY_NAME, GATEWAY_METRICS_SERVICE, GATEWAY_READY_PATH, GATEWAY_HEALTH_PATH, RESTRICTED_CONTAINER, GATEWAY_INTERNAL_SECRET, GATEWAY_INTERNAL_SECRET_KEY, GATEWAY_OIDC_SECRET, GATEWAY_OIDC_DIR, GATEWAY_LABELS, GatewayArgs } from "./gatewayNames";
import { gatewayStatements, GATEWAY_RBAC_RULES, GATEWAY_CLUSTER_RBAC_RULES } from "./gatewayPolicy";
import { gatewayEnv, gatewayOidcSecret } from "./gatewayEnv";
import { createGatewayIngress, formerGatewayParent } from "./gatewayIngress";

export * from "./gatewayNames";
export * from "./gatewayPolicy";
export * from "./gatewayEnv";

export class ComfyGateway extends pulumi.ComponentResource {
  readonly tableName: pulumi.Output<string>;
  readonly tableArn: pulumi.Output<string>;
  readonly serviceName: pulumi.Output<string>;
  readonly deployment: k8s.apps.v1.Deployment;
  /** Everything the gateway's Services select on, for NetworkPolicies. */
  readonly labels = GATEWAY_LABELS;
  /** The Deployment and its Services: what a caller inside the cluster (KEDA's ScaledObject) waits for. */
  readonly ready: pulumi.Resource[];
  /** DNS name of the internal ALB the Ingress produced. */
  readonly albHostname: pulumi.Output<string>;
  /** The ALB's name, resolvable only after the Ingress has its load balancer. */
  readonly albName: pulumi.Output<string>;
  readonly albSecurityGroupId: pulumi.Output<string>;
  private readonly signIn: { name: string; namespace: string; provider: k8s.Provider; dependsOn: pulumi.Input<pulumi.Resource>[] };

  constructor(name: string, args: GatewayArgs, opts?: pulumi.ComponentResourceOptions) {
    if (args.metricsLogGroupName && !args.metricsLogGroupArn) {
      throw new pulumi.InputPropertyError({ propertyPath: "metricsLogGroupArn", reason: "required with metricsLogGroupName (the role is scoped to that group)" });
    }
    if (args.auditLogGroupName && !args.auditLogGroupArn) {
      throw new pulumi.InputPropertyError({ propertyPath: "auditLogGroupArn", reason: "required with auditLogGroupName (the role is scoped to that group)" });
    }
    const formerParent = formerGatewayParent(args.stackName);
    super("comfyui:workload:Gateway", name, {}, pulumi.mergeOptions(opts, { aliases: [{ parent: formerParent }] }));
    const parent = { parent: this };
    const k = { parent: this, provider: args.provider };

    // Prompts, queue and history: on demand (an idle studio costs nothing), point-in-time recovery on.
    // DynamoDB encrypts every table at rest and that cannot be turned off (DynamoDB DG "encryption at
    // rest usage notes"); the AWS-owned key needs no KMS permissions on the gateway's role.
    const table = new aws.dynamodb.Table(
      `${name}-table`,
      {
        billingMode: "PAY_PER_REQUEST",
        hashKey: "pk",
        rangeKey: "sk",
        attributes: [
          { name: "pk", type: "S" },
          { name: "sk", type: "S" },
          { name: "open", type: "S" },
          { name: "openKey", type: "S" },
          { name: "hist", type: "S" },
          { name: "histKey", type: "S" },
          { name: "uhist", type: "S" },
        ],
        globalSecondaryIndexes: [
          { name: "open", hashKey: "open", rangeKey: "openKey", projectionType: "ALL" },
          { name: "history", hashKey: "hist", rangeKey: "histKey", projectionType: "ALL" },
          // Each user's own history, a page at a time (store/dynamo.ts listHistory with an owner).
          { name: "userHistory", hashKey: "uhist", rangeKey: "histKey", projectionType: "ALL" },
        ],
        ttl: { attributeName: "expiresAt", enabled: true },
        pointInTimeRecovery: { enabled: true },
        deletionProtectionEnabled: false,
        tags: args.tags,
      },
      parent,
    );

    const role = new PodIdentityRole(
      `${name}-role`,
      {
        clusterName: args.clusterName,
        namespace: args.namespace,
        serviceAccount: GATEWAY_NAME,
        statements: gatewayStatements({
          tableArn: table.arn,
          outputsBucketArn: args.outputsBucketArn,
          inputsBucketArn: args.inputsBucketArn,
          userdataBucketArn: args.userdataBucketArn,
          metricsLogGroupArn: args.metricsLogGroupName ? args.metricsLogGroupArn : undefined,
          auditLogGroupArn: args.auditLogGroupName ? args.auditLogGroupArn : undefined,
          modelsBucketArn: args.modelsBucket ? args.modelsBucketArn : undefined,
        }),
        tags: args.tags,
      },
      parent,
    );

    const sa = new k8s.core.v1.ServiceAccount(`${name}-sa`, { metadata: { name: GATEWAY_NAME, namespace: args.namespace } }, { ...k, dependsOn: args.dependsOn });
    const rbacRole = new k8s.rbac.v1.Role(`${name}-rbac`, { metadata: { name: GATEWAY_NAME, namespace: args.namespace }, rules: GATEWAY_RBAC_RULES }, { ...k, dependsOn: args.dependsOn });
    const binding = new k8s.rbac.v1.RoleBinding(
      `${name}-rbac`,
      {
        metadata: { name: GATEWAY_NAME, namespace: args.namespace },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: GATEWAY_NAME },
        subjects: [{ kind: "ServiceAccount", name: GATEWAY_NAME, namespace: args.namespace }],
      },
      { ...k, dependsOn: [rbacRole, sa] },
    );
    // Cluster-scoped names carry the namespace, so two stacks on one cluster do not collide.
    const clusterRbacName = `${GATEWAY_NAME}-${args.namespace}-nodes`;
    const clusterRole = new k8s.rbac.v1.ClusterRole(`${name}-nodes`, { metadata: { name: clusterRbacName }, rules: GATEWAY_CLUSTER_RBAC_RULES }, { ...k, dependsOn: args.dependsOn });
    const clusterBinding = new k8s.rbac.v1.ClusterRoleBinding(
      `${name}-nodes`,
      {
        metadata: { name: clusterRbacName },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: clusterRbacName },
        subjects: [{ kind: "ServiceAccount", name: GATEWAY_NAME, namespace: args.namespace }],
      },
      { ...k, dependsOn: [clusterRole, sa] },
    );

    // The replicas' shared token (the replica link and the leader's internal routes): random, only ever
    // in a Secret and the state's secrets, never a plain env value.
    const token = new random.RandomPassword(`${name}-internal-token`, { length: 48, special: false }, parent);
    const tokenSecret = new k8s.core.v1.Secret(
      `${name}-internal-token`,
      { metadata: { name: GATEWAY_INTERNAL_SECRET, namespace: args.namespace, labels: GATEWAY_LABELS }, type: "Opaque", stringData: { [GATEWAY_INTERNAL_SECRET_KEY]: token.result } },
      { ...k, dependsOn: args.dependsOn },
    );

    const auth = args.auth ?? "oidc";
    const env = gatewayEnv(args, table.name);
    this.deployment = new k8s.apps.v1.Deployment(
      `${name}-deploy`,
      {
        metadata: { name: GATEWAY_NAME, namespace: args.namespace, labels: GATEWAY_LABELS },
        spec: {
          replicas: args.replicas ?? 2,
          selector: { matchLabels: GATEWAY_LABELS },
          // Surge first: every replica serves (a new one follows the leader and is Ready), so the old one
          // goes once the new one is Ready; a leader that leaves hands the Lease over at once.
          strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
          template: {
            metadata: { labels: { ...GATEWAY_LABELS } },
            spec: {
              serviceAccountName: GATEWAY_NAME,
              nodeSelector: { ...SYSTEM_NODE_LABEL },
              // Leader and standby on different nodes, so one node's loss keeps a gateway.
              affinity: {
                podAntiAffinity: {
                  preferredDuringSchedulingIgnoredDuringExecution: [
                    { weight: 100, podAffinityTerm: { topologyKey: "kubernetes.io/hostname", labelSelector: { matchLabels: GATEWAY_LABELS } } },
                  ],
                },
              },
              terminationGracePeriodSeconds: 30,
              securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, seccompProfile: { type: "RuntimeDefault" } },
              containers: [
                {
                  name: "gateway",
                  image: args.imageUri,
                  ports: [
                    { name: "http", containerPort: GATEWAY_PORT },
                    { name: "internal", containerPort: GATEWAY_ADMIN_PORT },
                  ],
                  env: [
                    ...Object.entries(env).map(([n, value]) => ({ name: n, value })),
                    { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                    // Written on the Lease while this replica leads: where the others follow it.
                    { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                    { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
                    { name: SETTINGS.internalToken.env, valueFrom: { secretKeyRef: { name: GATEWAY_INTERNAL_SECRET, key: GATEWAY_INTERNAL_SECRET_KEY } } },
                    // The model agents' token (workload/modelsAgent.ts writes the Secret); optional: no agents, no token.
                    ...(args.modelsBucket ? [{ name: SETTINGS.modelsAgentToken.env, valueFrom: { secretKeyRef: { name: AGENT_NAMES.tokenSecret, key: AGENT_NAMES.tokenSecretKey, optional: true } } }] : []),
                  ],
                  resources: { requests: { cpu: "250m", memory: "256Mi" }, limits: { memory: "1Gi" } },
                  securityContext: RESTRICTED_CONTAINER,
                  // Ready = serving, on every replica (leader or follower): `pulumi up`'s wait and a rollout
                  // finish (Kubernetes completes a Deployment when every replica is available).
                  readinessProbe: { httpGet: { path: GATEWAY_READY_PATH, port: "internal" }, periodSeconds: 2, failureThreshold: 2 },
                  livenessProbe: { httpGet: { path: GATEWAY_HEALTH_PATH, port: "internal" }, periodSeconds: 10, failureThreshold: 3 },
                  volumeMounts: [
                    { name: "tmp", mountPath: "/tmp" },
                    ...(auth === "oidc" ? [{ name: "oidc", mountPath: GATEWAY_OIDC_DIR, readOnly: true }] : []),
                  ],
                },
              ],
              volumes: [
                { name: "tmp", emptyDir: { sizeLimit: "1Gi" } },
                // The sign-in settings exist only once the issuer's client does, and that needs the site's
                // address, which needs this Deployment's ALB: so the Secret is optional here, written later in
                // the same `pulumi up` (gatewayOidcSecret), and the gateway re-reads the file every 15 s.
                // Until then sign-in answers 503 and API keys work. The kubelet refreshes a Secret volume on its
                // sync period, so the file appears without a restart (Kubernetes docs, "Mounted Secrets are
                // updated automatically"; not with subPath, which is why the whole folder is mounted).
                ...(auth === "oidc" ? [{ name: "oidc", secret: { secretName: GATEWAY_OIDC_SECRET, optional: true, defaultMode: 0o440 } }] : []),
              ],
            },
          },
        },
      },
      { ...k, dependsOn: [binding, clusterBinding, role, tokenSecret, ...args.dependsOn] },
    );

    const service = new k8s.core.v1.Service(
      `${name}-svc`,
      {
        metadata: { name: GATEWAY_NAME, namespace: args.namespace, labels: GATEWAY_LABELS },
        spec: { type: "ClusterIP", selector: GATEWAY_LABELS, ports: [{ name: "http", port: GATEWAY_PORT, targetPort: "http" }] },
      },
      { ...k, dependsOn: args.dependsOn },
    );
    const metricsService = new k8s.core.v1.Service(
      `${name}-metrics-svc`,
      {
        metadata: { name: GATEWAY_METRICS_SERVICE, namespace: args.namespace, labels: GATEWAY_LABELS },
        spec: {
          type: "ClusterIP",
          selector: GATEWAY_LABELS,
          // Every replica answers the scaling figure from the store: during a hand-over the trigger
          // must not see zero endpoints (an erroring trigger blocks KEDA's scale to zero).
          publishNotReadyAddresses: true,
          ports: [{ name: "internal", port: GATEWAY_ADMIN_PORT, targetPort: "internal" }],
        },
      },
      { ...k, dependsOn: args.dependsOn },
    );
    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      // One replica may go at a time (a drain, a node group upgrade); the other serves meanwhile.
      { metadata: { name: GATEWAY_NAME, namespace: args.namespace }, spec: { maxUnavailable: 1, selector: { matchLabels: GATEWAY_LABELS } } },
      { ...k, dependsOn: args.dependsOn },
    );

    this.ready = [this.deployment, service, metricsService];
    const { albSg, ingress } = createGatewayIngress(this, args, [this.deployment, service]);

    this.tableName = table.name;
    this.tableArn = table.arn;
    this.serviceName = service.metadata.name;
    this.albHostname = ingress.status.loadBalancer.ingress[0].hostname;
    // Tied to the Ingress status, so the edge reads the ALB only once the controller has made it.
    this.albName = this.albHostname.apply(() => args.albName);
    this.albSecurityGroupId = albSg.id;
    this.signIn = { name: `${name}-oidc`, namespace: args.namespace, provider: args.provider, dependsOn: args.dependsOn };
    this.registerOutputs({ tableName: this.tableName, serviceName: this.serviceName, albHostname: this.albHostname, albName: this.albName });
  }

  /**
   * The sign-in settings Secret (gatewayOidcSecret), which the Deployment mounts as optional. The issuer's
   * client needs the site's address, and that needs this gateway's ALB, so index.ts adds it once the
   * identity exists. It was made in index.ts, at the top of the stack, under the same name: the alias keeps it.
   */
  signInWith(oidc: Parameters<typeof gatewayOidcSecret>[1]["oidc"]): k8s.core.v1.Secret {
    const { name, namespace, provider, dependsOn } = this.signIn;
    return gatewayOidcSecret(name, { namespace, oidc, provider, dependsOn }, { parent: this, aliases: [{ parent: pulumi.rootStackResource }] });
  }
}
