// CLI around startStandIn, for tests that need a stand-in in its own process (kill -9, restart):
//   node -r ts-node/register/transpile-only test/gateway/standin/main.ts --port 0 --step-ms 10 \
//     --data-dir DIR [--models-json FILE] [--fault crash:3|hang:2|execution_error[:NODE]] [--host H]
//     [--ready-after-ms N] [--max-upload-mb N] [--preview-method none|auto|latent2rgb|taesd] [--front-end-root DIR]
// Prints exactly one line "STANDIN LISTENING http://127.0.0.1:<port>" on stdout once it listens;
// SIGTERM/SIGINT close it and exit 0. A crash fault SIGKILLs the process.
import * as fs from "fs";
import { Fault, StandInOptions, startStandIn } from "./index";

export function parseFault(spec: string): Fault {
  const [kind, arg] = [spec.split(":")[0], spec.split(":").slice(1).join(":")];
  if (kind === "crash" || kind === "hang") {
    if (arg !== "" && !/^\d+$/.test(arg)) throw new Error(`--fault ${spec}: the step count after "${kind}:" must be a whole number`);
    return arg === "" ? { kind } : { kind, afterSteps: Number(arg) };
  }
  if (kind === "execution_error") return arg === "" ? { kind } : { kind, nodeId: arg };
  throw new Error(`--fault ${spec}: expected crash[:N], hang[:N] or execution_error[:NODE_ID]`);
}

export function parseArgs(argv: string[]): StandInOptions {
  const opts: StandInOptions = { crashBy: "sigkill" };
  const num = (flag: string, v: string | undefined) => {
    if (v === undefined || !/^\d+(\.\d+)?$/.test(v)) throw new Error(`${flag} needs a non-negative number, got ${v === undefined ? "nothing" : JSON.stringify(v)}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    switch (flag) {
      case "--port": opts.port = num(flag, v); i++; break;
      case "--step-ms": opts.stepMs = num(flag, v); i++; break;
      case "--ready-after-ms": opts.readyAfterMs = num(flag, v); i++; break;
      case "--max-upload-mb": opts.maxUploadMb = num(flag, v); i++; break;
      case "--host": if (!v) throw new Error("--host needs an address"); opts.host = v; i++; break;
      case "--data-dir": if (!v) throw new Error("--data-dir needs a folder"); opts.dataDir = v; i++; break;
      case "--models-json": {
        if (!v) throw new Error("--models-json needs a file");
        const m = JSON.parse(fs.readFileSync(v, "utf8"));
        if (m === null || typeof m !== "object" || Array.isArray(m) || !Object.values(m).every((x) => Array.isArray(x) && x.every((f) => typeof f === "string"))) {
          throw new Error(`--models-json ${v}: expected {"<folder>": ["<file>", ...], ...}`);
        }
        opts.models = m;
        i++;
        break;
      }
      case "--front-end-root": if (!v) throw new Error("--front-end-root needs a folder"); opts.frontendRoot = v; i++; break;
      case "--fault": if (!v) throw new Error("--fault needs a value"); opts.fault = parseFault(v); i++; break;
      case "--preview-method":
        if (v !== "none" && v !== "auto" && v !== "latent2rgb" && v !== "taesd") throw new Error(`--preview-method must be none, auto, latent2rgb or taesd, got ${JSON.stringify(v)}`);
        opts.previewMethod = v;
        i++;
        break;
      default: throw new Error(`unknown argument ${JSON.stringify(flag)}`);
    }
  }
  return opts;
}

async function main(): Promise<void> {
  let opts: StandInOptions;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`standin: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const s = await startStandIn(opts);
  const stop = () => void s.close().then(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  process.stdout.write(`STANDIN LISTENING ${s.url}\n`);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`standin: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}
