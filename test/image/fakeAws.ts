/**
 * Loopback stand-ins for the AWS APIs the image build's provider calls, for tests that run the
 * provider in its own process (where aws-sdk-client-mock cannot reach): CodeBuild (JSON 1.1,
 * X-Amz-Target CodeBuild_20161006.*), CloudWatch Logs (JSON 1.1, Logs_20140328.*) and STS
 * AssumeRole (query protocol, XML answer). Every request is recorded with the access key and the
 * region its SigV4 Authorization header names, so a test sees whose credentials signed it.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeCall {
  service: "codebuild" | "logs" | "sts";
  action: string;
  body: Record<string, unknown>;
  /** Access key id of the SigV4 signature (Credential=<key>/<date>/<region>/<service>/aws4_request). */
  accessKeyId: string;
  region: string;
}

export interface FakeAws {
  url: string;
  calls: FakeCall[];
  /** Resolves once a call of that action has arrived. */
  waitFor(action: string, timeoutMs?: number): Promise<FakeCall>;
  close(): Promise<void>;
}

function signer(auth: string | undefined): { accessKeyId: string; region: string } {
  const m = /Credential=([^/]+)\/\d{8}\/([^/]+)\//.exec(auth ?? "");
  return { accessKeyId: m?.[1] ?? "", region: m?.[2] ?? "" };
}

/**
 * Builds stay IN_PROGRESS until stopped (then STOPPED); each AssumeRole hands out keys named after
 * the role ("ASIA-<role name>"), so a chain shows which role's keys signed the next call.
 */
export async function startFakeAws(): Promise<FakeAws> {
  const calls: FakeCall[] = [];
  const waiters: { action: string; resolve: (c: FakeCall) => void }[] = [];
  const stopped = new Set<string>();
  let builds = 0;
  const server = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (raw += d));
    req.on("end", () => {
      const target = String(req.headers["x-amz-target"] ?? "");
      const { accessKeyId, region } = signer(req.headers.authorization);
      let call: FakeCall;
      if (target) {
        const [prefix, action] = target.split(".");
        call = { service: prefix.startsWith("CodeBuild") ? "codebuild" : "logs", action, body: raw ? (JSON.parse(raw) as Record<string, unknown>) : {}, accessKeyId, region };
      } else {
        const form = Object.fromEntries(new URLSearchParams(raw));
        call = { service: "sts", action: form.Action ?? "", body: form, accessKeyId, region };
      }
      calls.push(call);
      for (const w of waiters.filter((x) => x.action === call.action)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(call);
      }
      const json = (o: unknown) => {
        res.writeHead(200, { "content-type": "application/x-amz-json-1.1" });
        res.end(JSON.stringify(o));
      };
      switch (call.action) {
        case "StartBuild": {
          const id = `${String(call.body.projectName)}:fake-${++builds}`;
          return json({ build: { id, buildStatus: "IN_PROGRESS", currentPhase: "SUBMITTED" } });
        }
        case "BatchGetBuilds":
          return json({
            builds: (call.body.ids as string[]).map((id) =>
              stopped.has(id) ? { id, buildStatus: "STOPPED", buildComplete: true, currentPhase: "COMPLETED" } : { id, buildStatus: "IN_PROGRESS", currentPhase: "BUILD" },
            ),
          });
        case "StopBuild":
          stopped.add(String(call.body.id));
          return json({ build: { id: call.body.id, buildStatus: "IN_PROGRESS", currentPhase: "BUILD" } });
        case "GetLogEvents":
          return json({ events: [] });
        case "AssumeRole": {
          const name = String(call.body.RoleArn).split("/").pop();
          res.writeHead(200, { "content-type": "text/xml" });
          return res.end(
            `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials>` +
              `<AccessKeyId>ASIA-${name}</AccessKeyId><SecretAccessKey>secret-${name}</SecretAccessKey><SessionToken>token-${name}</SessionToken>` +
              `<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser><Arn>${String(call.body.RoleArn)}/s</Arn>` +
              `<AssumedRoleId>AROA:${name}</AssumedRoleId></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleResponse>`,
          );
        }
        default:
          res.writeHead(400, { "content-type": "application/x-amz-json-1.1" });
          return res.end(JSON.stringify({ __type: "UnknownOperationException", message: call.action }));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    calls,
    waitFor(action, timeoutMs = 10_000) {
      const seen = calls.find((c) => c.action === action);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${action} call within ${timeoutMs} ms (calls: ${calls.map((c) => c.action).join(", ")})`)), timeoutMs);
        waiters.push({ action, resolve: (c) => (clearTimeout(t), resolve(c)) });
      });
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}
