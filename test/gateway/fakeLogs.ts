import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { CloudWatchLogsClient } from "@aws-sdk/client-cloudwatch-logs";

export interface LogsCall { target: string; body: { logGroupName?: string; logStreamName?: string; logEvents?: { timestamp: number; message: string }[] } }

/**
 * A CloudWatch Logs endpoint on loopback speaking the service's AWS JSON 1.1 protocol (POST /,
 * X-Amz-Target: Logs_20140328.<Operation>, JSON bodies; errors as 400 with `__type`), recording
 * every call. `fail` answers the next calls of an operation with an error.
 */
export async function fakeLogs() {
  const calls: LogsCall[] = [];
  const accepted: LogsCall[] = [];
  const streams = new Set<string>();
  const failures: { op: string; status: number; type: string }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const target = String(req.headers["x-amz-target"] ?? "");
      const body = JSON.parse(Buffer.concat(chunks).toString() || "{}");
      calls.push({ target, body });
      const op = target.replace(/^Logs_20140328\./, "");
      const f = failures.findIndex((x) => x.op === op);
      const reply = (status: number, json: object) => {
        res.writeHead(status, { "content-type": "application/x-amz-json-1.1" });
        res.end(JSON.stringify(json));
      };
      if (f >= 0) {
        const [x] = failures.splice(f, 1);
        return reply(x.status, { __type: x.type, message: `injected ${x.type}` });
      }
      const key = `${body.logGroupName}|${body.logStreamName}`;
      if (op === "CreateLogStream") {
        if (streams.has(key)) return reply(400, { __type: "ResourceAlreadyExistsException", message: "The specified log stream already exists" });
        streams.add(key);
        return reply(200, {});
      }
      if (op === "PutLogEvents") {
        if (!streams.has(key)) return reply(400, { __type: "ResourceNotFoundException", message: "The specified log stream does not exist." });
        const ts = (body.logEvents ?? []).map((e: { timestamp: number }) => e.timestamp);
        if (ts.some((t: number, i: number) => i > 0 && t < ts[i - 1])) return reply(400, { __type: "InvalidParameterException", message: "Log events in a single PutLogEvents request must be in chronological order." });
        accepted.push({ target, body });
        return reply(200, { nextSequenceToken: "1" });
      }
      return reply(400, { __type: "UnknownOperationException", message: op });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    calls,
    /** The messages PutLogEvents accepted, in order. */
    messages: () => accepted.flatMap((c) => (c.body.logEvents ?? []).map((e) => e.message)),
    fail: (op: string, type: string, status = 400) => failures.push({ op, status, type }),
    client: () => new CloudWatchLogsClient({ endpoint: url, region: "us-east-1", credentials: { accessKeyId: "AKIDTEST", secretAccessKey: "test" }, maxAttempts: 1 }),
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
