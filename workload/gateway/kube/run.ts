import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import type { Logger } from "pino";
import { buildApp } from "../app";
import type { GatewayConfig } from "../config";
import { DynamoStore } from "../store/dynamo";
import { S3ObjectStore } from "../store/objects";
import { KubeClient } from "./client";
import { LeaseElector } from "./lease";
import { cloudWatchAudit } from "../audit";
import { metricsSinkFor } from "../telemetry";
import type { PodInfo } from "../dispatch/dispatcher";
import { modelsS3Client, s3Lister } from "../models/library";
import { EndpointSliceSource, patchDeletionCost, podImageId, podNodeStart } from "./pods";

/** Kubernetes mode: DynamoDB + S3 through the pod's role, pods from EndpointSlices, one leader by Lease. */
export async function startKubernetes(config: GatewayConfig, log: Logger): Promise<{ url: string; adminUrl: string; close(): Promise<void> }> {
  const kube = KubeClient.inCluster(process.env);
  const ns = config.namespace!;
  const ddb = new DynamoDBClient({ region: config.region });
  // A custom S3 endpoint (the tests' s3rver, MinIO) answers path-style requests only.
  const s3 = new S3Client({ region: config.region, forcePathStyle: process.env.AWS_ENDPOINT_URL_S3 !== undefined });
  const store = new DynamoStore({ table: config.table, client: ddb });
  const gateway = await buildApp(config, {
    store,
    auth: store.authStore(),
    objects: new S3ObjectStore(s3, config.outputsBucket!, config.outputsPrefix),
    inputs: new S3ObjectStore(s3, config.inputsBucket!, config.inputsPrefix),
    users: new S3ObjectStore(s3, config.userdataBucket!, ""),
    log,
    // Called only when a pod's cost changed (models/deletionCost.ts DeletionCosts); a failed patch is tried again at its next refresh.
    onPodCost: (pod, cost) => patchDeletionCost(kube, ns, pod, cost).catch((err: unknown) => {
      log.warn({ pod, cost, err: (err as Error).message }, "pod-deletion-cost patch failed");
      throw err;
    }),
    imageIdOf: (pod) => podImageId(kube, ns, pod),
    metrics: metricsSinkFor(config, log),
    audit: config.auditLogGroup ? cloudWatchAudit({ logGroup: config.auditLogGroup, region: config.region, podName: config.podName }, log) : undefined,
    nodeStartOf: (pod) => podNodeStart(kube, ns, pod),
    modelsLister: config.modelsBucket ? s3Lister(config.modelsEndpoint ? modelsS3Client(config) : s3, config.modelsBucket) : undefined,
  });
  // Each ComfyUI pod gets the model agent of its node (the agents' headless Service lists them with their nodeName).
  let comfyPods: PodInfo[] = [];
  const agentByNode = new Map<string, string>();
  const publish = () => gateway.setPods(comfyPods.map((p) => ({ ...p, ...(p.node && agentByNode.has(p.node) ? { agentUrl: agentByNode.get(p.node) } : {}) })));
  const pods = new EndpointSliceSource(kube, ns, config.comfyuiService, config.comfyuiPortName, (p) => {
    comfyPods = p;
    publish();
  }, log.child({ component: "pods" }));
  const agents = config.modelsBucket && config.modelsAgentService
    ? new EndpointSliceSource(kube, ns, config.modelsAgentService, "api", (list) => {
      agentByNode.clear();
      for (const a of list) if (a.node && a.ready && !a.terminating) agentByNode.set(a.node, a.url);
      publish();
      // An agent on a node whose ComfyUI pod is not Ready yet fetches a waiting prompt's files meanwhile.
      gateway.setAgents([...agentByNode].map(([node, url]) => ({ node, url })));
    }, log.child({ component: "models-agents" }))
    : undefined;
  // A fencing token from the store, then lead while the Lease holds (every write carries the token); a
  // store that does not answer is retried while this replica still holds the Lease.
  const takeTheLead = async () => {
    for (let delay = 500; elector.isLeader() && !gateway.services.dispatcher && !gateway.services.closing; delay = Math.min(delay * 2, 5000)) {
      try {
        const epoch = await store.takeEpoch();
        if (elector.isLeader()) await gateway.lead({ epoch }, () => elector.isLeader());
        return;
      } catch (err: unknown) {
        log.error({ err: (err as Error).message }, "taking the lead failed; retrying while the Lease holds");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  };
  const address = `http://${config.podIp!.includes(":") ? `[${config.podIp}]` : config.podIp}:${config.adminPort}`;
  const elector: LeaseElector = new LeaseElector(kube, ns, config.leaseName, config.podName, {
    onLead: () => void takeTheLead(),
    onLose: () => void gateway.standDown(),
    onLeader: (url) => gateway.follow(url),
  }, log.child({ component: "lease" }), {
    durationSeconds: config.leaseSeconds, renewDeadlineMs: config.leaseRenewDeadlineSeconds * 1000, retryMs: config.leaseRetrySeconds * 1000,
  }, address);
  const adminUrl = await gateway.admin.listen({ port: config.adminPort, host: config.host });
  const url = await gateway.app.listen({ port: config.port, host: config.host });
  await gateway.library?.start();
  await agents?.start().catch((err: unknown) => log.warn({ err: (err as Error).message }, "model agents not listed; prompts run on what nodes hold"));
  await pods.start();
  elector.start();
  let closing: Promise<void> | undefined;
  return {
    url,
    adminUrl,
    close() {
      closing ??= (async () => {
        // Stop dispatching and close the pod sockets (a close handshake, so ComfyUI has dropped this
        // leadership's client ids) before the Lease is released and the next leader connects.
        gateway.services.closing = true;
        await gateway.standDown();
        await elector.release().catch((err: unknown) => log.warn({ err: (err as Error).message }, "lease release failed"));
        pods.stop();
        agents?.stop();
        await gateway.close();
        ddb.destroy();
        s3.destroy();
      })();
      return closing;
    },
  };
}
