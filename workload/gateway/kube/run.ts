import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { S3Client } from "@aws-sdk/client-s3";
import type { Logger } from "pino";
import { buildApp } from "../app";
import type { GatewayConfig } from "../config";
import { DynamoStore } from "../store/dynamo";
import { S3ObjectStore } from "../store/objects";
import { KubeClient } from "./client";
import { LeaseElector } from "./lease";
import { metricsSinkFor } from "../telemetry";
import { EndpointSliceSource, patchDeletionCost, podImageId, podNodeStart } from "./pods";

/** Kubernetes mode: DynamoDB + S3 through the pod's role, pods from EndpointSlices, one leader by Lease. */
export async function startKubernetes(config: GatewayConfig, log: Logger): Promise<{ close(): Promise<void> }> {
  const kube = KubeClient.inCluster();
  const ns = config.namespace!;
  const ddb = new DynamoDBClient({ region: config.region });
  const s3 = new S3Client({ region: config.region });
  const store = new DynamoStore({ table: config.table, client: ddb });
  const lastLoad = new Map<string, number>();
  const gateway = await buildApp(config, {
    store,
    objects: new S3ObjectStore(s3, config.outputsBucket!, config.outputsPrefix),
    inputs: new S3ObjectStore(s3, config.inputsBucket!, config.inputsPrefix),
    users: new S3ObjectStore(s3, config.userdataBucket!, ""),
    log,
    onPodLoad: (pod, load) => {
      if (lastLoad.get(pod) === load) return;
      lastLoad.set(pod, load);
      patchDeletionCost(kube, ns, pod, load).catch((err: unknown) => log.warn({ pod, err: (err as Error).message }, "pod-deletion-cost patch failed"));
    },
    imageIdOf: (pod) => podImageId(kube, ns, pod),
    metrics: metricsSinkFor(config, log),
    nodeStartOf: (pod) => podNodeStart(kube, ns, pod),
  });
  const pods = new EndpointSliceSource(kube, ns, config.comfyuiService, config.comfyuiPortName, (p) => gateway.setPods(p), log.child({ component: "pods" }));
  const elector = new LeaseElector(kube, ns, config.leaseName, config.podName, { onLead: () => gateway.lead(), onLose: () => gateway.standDown() }, log.child({ component: "lease" }));
  await gateway.app.listen({ port: config.port, host: config.host });
  await pods.start();
  elector.start();
  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        gateway.ctx.closing = true;
        await gateway.standDown();
        await elector.release().catch((err: unknown) => log.warn({ err: (err as Error).message }, "lease release failed"));
        pods.stop();
        await gateway.close();
        ddb.destroy();
        s3.destroy();
      })();
      return closing;
    },
  };
}
