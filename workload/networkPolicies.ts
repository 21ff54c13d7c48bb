/**
 * The namespace's NetworkPolicies: default deny for ingress, then exactly the paths the design needs
 * (enforced by the VPC CNI's network policy agent). Here: the gateway to ComfyUI. Each other component
 * admits its own callers: the ALB, KEDA and its replicas to the gateway (gatewayIngress.ts), the gateway
 * to the model agents (modelsAgent.ts).
 */
import * as k8s from "@pulumi/kubernetes";
import type * as pulumi from "@pulumi/pulumi";
import { COMFYUI_PORT } from "./comfyuiNames";
import { GATEWAY_LABELS } from "./gatewayNames";

export function createNetworkPolicies(
  name: string,
  nsDeps: pulumi.CustomResourceOptions,
  args: { namespace: string; comfyuiLabels: Record<string, string>; comfyuiEgressCidrs: string[] },
): void {
  const ns = args.namespace;
  const labels = { comfyui: args.comfyuiLabels };
  // Default deny, then exactly the paths the design needs.
  new k8s.networking.v1.NetworkPolicy(`${name}-netpol-default`, { metadata: { name: "default-deny-ingress", namespace: ns }, spec: { podSelector: {}, policyTypes: ["Ingress"] } }, nsDeps);
  new k8s.networking.v1.NetworkPolicy(
    `${name}-netpol-comfyui`,
    {
      metadata: { name: "allow-gateway-to-comfyui", namespace: ns },
      spec: comfyuiNetworkPolicySpec(labels.comfyui, args.comfyuiEgressCidrs),
    },
    nsDeps,
  );
}

/**
 * ComfyUI pods run custom-node Python, so they are fenced both ways. In: only the gateway's pods, on
 * ComfyUI's port — no VPC range, since other pods' addresses are in it. The kubelet's probes still reach
 * them: the VPC CNI's network policy agent always admits the pod's own node IP (aws/aws-network-policy-agent
 * PR #65, "Ignore policy restrictions against Node IP", as NetworkPolicy v1 requires). Out: cluster DNS
 * only, plus the configured ranges for custom nodes that call APIs; the models are on the node, outputs go
 * through Mountpoint (outside the pod's network), and the pods hold no AWS credentials.
 */
export function comfyuiNetworkPolicySpec(podLabels: Record<string, string>, egressCidrs: string[]): k8s.types.input.networking.v1.NetworkPolicySpec {
  const dns = [
    { protocol: "UDP", port: 53 },
    { protocol: "TCP", port: 53 },
  ];
  return {
    podSelector: { matchLabels: podLabels },
    policyTypes: ["Ingress", "Egress"],
    ingress: [{ from: [{ podSelector: { matchLabels: GATEWAY_LABELS } }], ports: [{ protocol: "TCP", port: COMFYUI_PORT }] }],
    egress: [
      // CoreDNS as EKS runs it (the add-on's pods carry k8s-app=kube-dns in kube-system).
      { to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } }, podSelector: { matchLabels: { "k8s-app": "kube-dns" } } }], ports: dns },
      ...(egressCidrs.length > 0 ? [{ to: egressCidrs.map((cidr) => ({ ipBlock: { cidr } })) }] : []),
    ],
  };
}

/**
 * Rolling update that finishes at the GPU cap: maxSurge 0 never asks for a GPU beyond the pods that
 * exist, maxUnavailable 1 replaces one pod at a time.
 */
